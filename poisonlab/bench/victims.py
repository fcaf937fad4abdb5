"""The victim of each training setting, from one table (`VICTIMS`): how a fresh victim is built, how it trains
on the training set with the poisons in it (or some rows of it: a defense's removal, DPA's partitions), and
how it predicts the test split.

- scratch: the trial's initialisation of the scenario's model, trained by the recipe;
- finetune: a copy of the pretrained network, every layer trained by the recipe;
- frozen: the pretrained network with a fresh linear head, only the head trained, on the pretrained network's
  features (computed once for the clean images; only the poisons' are new). With augmentation in the recipe,
  `views` K > 0 trains on the features of K augmented views of each image (the clean images' computed once per
  scenario, the poisons' per trial; one view per image per epoch), K = 0 augments every batch anew and runs the
  extractor on it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..data import Dataset, Splits
from ..defenses.detect import representation
from ..device import device_of
from ..models import Classifier, build_model, cached_model, predict, train
from ..models.train import train_head
from ..threat import PoisonSet
from .scenario import Scenario
from .shared import Networks


def training_set(train_set: Dataset, poison: PoisonSet | None, rows: torch.Tensor | None) -> Dataset:
    """The training set with `poison` in it (None: clean), restricted to `rows` (None: all)."""
    data = poison.apply(train_set) if poison is not None else train_set
    return data if rows is None else data.take(rows)


@dataclass(frozen=True)
class FromScratch:
    scenario: Scenario
    data: Splits
    networks: Networks | None
    seed: int

    worth_caching = True  # training takes long enough that a stored network is worth loading

    def build(self) -> Classifier:
        model = build_model(self.scenario.model, self.data.train.shape, self.data.train.num_classes, seed=self.seed)
        return model.to(device_of(self.networks.reference)) if self.networks else model

    def fit(self, model: Classifier, poison: PoisonSet | None, rows: torch.Tensor | None = None,
            seed: int | None = None) -> Classifier:
        """Train `model` (from `build`) on the training set with `poison` in it, rows `rows`."""
        data = training_set(self.data.train, poison, rows)
        return train(model, data, self.scenario.recipe, seed=self.seed if seed is None else seed)

    def train(self, poison: PoisonSet | None, rows: torch.Tensor | None = None, seed: int | None = None) -> Classifier:
        return self.fit(self.build(), poison, rows, seed)

    def test_predictions(self, model: Classifier) -> torch.Tensor:
        """Predictions of the test split by a victim this trainer trained."""
        return predict(model, self.data.test.x)

    def representation(self, model: Classifier, poison: PoisonSet, space: str) -> torch.Tensor:
        """What a detector scores: the victim's features of the poisoned training set, or its pixels."""
        return representation(poison.apply(self.data.train), model, space)


@dataclass(frozen=True)
class FineTune(FromScratch):
    def build(self) -> Classifier:
        """The pretrained network; under protocol jht with a fresh linear head, as JHT's poison_test.py does
        (the fast protocol keeps the pretrained head)."""
        model = copy.deepcopy(self.networks.reference)
        if self.scenario.protocol == "jht":
            fresh_head(model, self.seed)
        return model


@dataclass(frozen=True)
class FrozenHead(FromScratch):
    @property
    def worth_caching(self) -> bool:
        """A head on stored features trains in a fraction of a second; on augmented views (JHT's 40 epochs of
        SGD) it takes seconds, and every attack of a trial shares its control."""
        return self.scenario.recipe.augment != "none"

    def build(self) -> Classifier:
        return fresh_head(copy.deepcopy(self.networks.reference).eval(), self.seed)

    def fit(self, model: Classifier, poison: PoisonSet | None, rows: torch.Tensor | None = None,
            seed: int | None = None) -> Classifier:
        recipe, seed = self.scenario.recipe, self.seed if seed is None else seed
        if recipe.augment != "none" and not recipe.views:  # augmented batches through the frozen extractor
            return train(model, training_set(self.data.train, poison, rows), recipe, seed=seed)
        labels = training_set(self.data.train, poison, None).y
        if recipe.augment != "none":
            views = self.networks.poisoned_views(poison, recipe.views, recipe.augment, self.seed, recipe.pad)
            if rows is not None:
                views, labels = views[:, rows.to(views.device)], labels[rows]
            return train_head(model, views, labels, recipe, seed)
        features = self.networks.poisoned_features(poison)
        if rows is not None:
            features, labels = features[rows.to(features.device)], labels[rows]
        return train_head(model, features, labels, recipe, seed)

    def test_predictions(self, model: Classifier) -> torch.Tensor:
        """A frozen victim's extractor is the pretrained one: its head reads the memoised test features."""
        with torch.no_grad():
            return model.eval().head(self.networks.test_features).argmax(1).cpu()

    def representation(self, model: Classifier, poison: PoisonSet, space: str) -> torch.Tensor:
        if space == "input":
            return super().representation(model, poison, space)
        return self.networks.poisoned_features(poison).flatten(1).cpu()


def fresh_head(model: Classifier, seed: int) -> Classifier:
    """`model` with its linear head re-initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.head.reset_parameters()
    return model


VICTIMS: dict[str, type[FromScratch]] = {"scratch": FromScratch, "finetune": FineTune, "frozen": FrozenHead}


CONTROL_FIELDS = {"dataset", "classes", "train_size", "test_size", "val_size", "sampling", "model", "recipe",
                  "setting", "pretrain", "pretrain_data", "pretrain_size", "pretrain_dataset", "protocol", "seed"}


def control_victim(victims: FromScratch, trial: int, cache_dir: str | None) -> Classifier:
    """The victim trained on the clean training set; cached, so every attack of a suite that shares the data,
    model, setting and recipe trains it once."""
    if not victims.worth_caching:
        return victims.train(None)
    config = {"victim": "control", "trial": trial, "scenario": victims.scenario.hash_of(CONTROL_FIELDS)}
    return cached_model(config, victims.build, lambda model: victims.fit(model, None), cache_dir)


def poisoned_victim(victims: FromScratch, trial: int, poison: PoisonSet, cache_dir: str | None) -> Classifier:
    """The victim trained with the poisons in; with a defense in the loop it is cached under the undefended
    scenario's hash, so the cells of an attack × defense matrix share it (crafting is deterministic)."""
    scenario = victims.scenario
    if scenario.defense == "none" or not victims.worth_caching:
        return victims.train(poison)
    undefended = scenario.model_copy(update={"defense": "none", "defense_params": {}})
    return cached_model({"victim": "poisoned", "trial": trial, "scenario": undefended.hash}, victims.build,
                        lambda model: victims.fit(model, poison), cache_dir)
