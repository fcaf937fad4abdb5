"""What a scenario's trials share: the loaded data, the training subset (drawn once when the trials start from
pretrained networks, else per trial), and those networks: the victim's architecture pretrained on the clean
training set (`reference`: frozen and fine-tuned victims start from it, a white-box attacker crafts on it), the
attacker's surrogates, and the reference's features of the clean splits, computed once.

A process keeps the data and networks of the scenarios it ran last (keyed by the fields they depend on), so a
scenario's trials, run one after another, load them once."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import torch

from ..data import Dataset, Splits, load_dataset
from ..device import device_of, resolve_device
from ..errors import ConfigError
from ..models import Classifier, build_model, cached_model, train
from ..models.train import train_head, view_features
from ..seeding import derive_seed, generator
from ..threat import PoisonSet
from .plan import Plan, trial_seed
from .scenario import SETTING_RECIPES, Scenario

BLACK_BOX = ("convnet-wide", "resnet8")  # other architectures than the victim's, pretrained on the same data
DATA_FIELDS = {"dataset", "data_root", "classes", "train_size", "test_size", "val_size", "sampling"}
PRETRAIN_FIELDS = {"pretrain_data", "pretrain_size", "pretrain_dataset", "pretrain_data_root"}
NETWORK_FIELDS = DATA_FIELDS | PRETRAIN_FIELDS | {"model", "pretrain", "knowledge", "surrogates", "seed", "device"}


@lru_cache(maxsize=4)
def cached_splits(dataset: str, data_root: str | None) -> Splits:
    """Each process loads a data set once."""
    return load_dataset(dataset, root=data_root)


@lru_cache(maxsize=4)
def shared_subset(fields: str) -> Splits:
    """The subset a scenario's trials share, drawn with the scenario's seed (the same objects for every trial,
    so the networks' memoised features of it serve them all)."""
    return draw_subset(Scenario.model_validate_json(fields), None)


def draw_subset(scenario: Scenario, seed: int | None) -> Splits:
    return cached_splits(scenario.dataset, scenario.data_root).subset(
        scenario.classes, scenario.train_size, scenario.test_size, seed=scenario.seed if seed is None else seed,
        val_size=scenario.val_size, sampling=scenario.sampling)


def trial_data(plan: Plan, trial: int) -> Splits:
    """The trial's data: the scenario's shared subset when it pretrains, else the trial's own draw."""
    scenario = plan.scenario
    if plan.pretrains:
        return shared_subset(scenario.model_dump_json(include=DATA_FIELDS | {"seed"}))
    return draw_subset(scenario, trial_seed(scenario, trial))


@dataclass(eq=False)
class Networks:
    """A scenario's pretrained networks (see the module's docstring) and the reference's clean features."""

    reference: Classifier
    surrogates: list[Classifier]
    data: Splits
    seed: int = 0
    pretrained_on: Dataset | None = None  # the images the networks were pretrained on
    _views: dict = field(default_factory=dict, repr=False)

    @property
    def surrogate(self) -> Classifier | list[Classifier]:
        return self.surrogates if len(self.surrogates) > 1 else self.surrogates[0]

    @cached_property
    def train_features(self) -> torch.Tensor:
        return features_of(self.reference, self.data.train)

    @cached_property
    def test_features(self) -> torch.Tensor:
        return features_of(self.reference, self.data.test)

    def poisoned_features(self, poison: PoisonSet | None) -> torch.Tensor:
        """The reference's features of the training set with `poison` in it (replaced or appended rows)."""
        if poison is None or not len(poison):
            return self.train_features
        with torch.no_grad():
            new = self.reference.eval().features(poison.x.to(device_of(self.reference)))
        if poison.insertion == "add":
            return torch.cat([self.train_features, new])
        features = self.train_features.clone()
        features[poison.indices.to(features.device)] = new
        return features

    def train_views(self, views: int, kind: str, pad: str = "reflect") -> torch.Tensor:
        """K×N×D: the reference's features of `views` augmented views of every clean training image, drawn once
        per scenario (its seed) and kept."""
        key = (views, kind, pad)
        if key not in self._views:
            g = generator(self.seed, "views", *view_labels(kind, pad))
            self._views[key] = view_features(self.reference, self.data.train.x, views, kind, g, pad)
        return self._views[key]

    def poisoned_views(self, poison: PoisonSet | None, views: int, kind: str, trial_seed: int,
                       pad: str = "reflect") -> torch.Tensor:
        """`train_views` with the poisons' own views (drawn with the trial's seed) in their rows."""
        clean = self.train_views(views, kind, pad)
        if poison is None or not len(poison):
            return clean
        new = view_features(self.reference, poison.x, views, kind,
                            generator(trial_seed, "poison-views", *view_labels(kind, pad)), pad)
        if poison.insertion == "add":
            return torch.cat([clean, new], 1)
        out = clean.clone()
        out[:, poison.indices.to(out.device)] = new
        return out

    @torch.no_grad()
    def reference_predictions(self) -> torch.Tensor:
        """The reference's predictions of the test split, from the memoised features."""
        return self.reference.eval().head(self.test_features).argmax(1).cpu()


def features_of(model: Classifier, split: Dataset) -> torch.Tensor:
    """The model's penultimate-layer features of `split`, in the chunks of 1,024 that `predict` runs."""
    device = device_of(model)
    with torch.no_grad():
        if not len(split):
            return torch.empty(0, model.feature_dim, device=device)
        return torch.cat([model.eval().features(c.to(device)) for c in split.x.split(1024)])


def scenario_networks(plan: Plan, cache_dir: str | None) -> Networks | None:
    """The scenario's pretrained networks (None when its trials start from none)."""
    if not plan.pretrains:
        return None
    return networks_for(plan.scenario.model_dump_json(include=NETWORK_FIELDS), cache_dir)


@lru_cache(maxsize=2)
def networks_for(fields: str, cache_dir: str | None) -> Networks:
    scenario = Scenario.model_validate_json(fields)
    data = shared_subset(scenario.model_dump_json(include=DATA_FIELDS | {"seed"}))
    on = pretraining_set(scenario, data)
    reference = pretrained(scenario, scenario.model, scenario.seed, on, cache_dir)
    others = [net for net in surrogates(scenario, reference, on, cache_dir) if net is not reference]
    if on.classes != data.train.classes:  # pretrained on another data set: heads for the victim's classes
        reference, *others = (for_classes(net, data.train, scenario.seed, i)
                              for i, net in enumerate([reference, *others]))
    return Networks(reference, others or [reference], data, scenario.seed, on)


def for_classes(model: Classifier, train: Dataset, seed: int, which: int) -> Classifier:
    """A network pretrained on another data set (its classes) with a linear head for the victim's classes,
    fitted on its features of the clean training set by the fast protocol's head recipe: the reference that
    chooses targets it classifies correctly. The victims train a fresh head of their own."""
    adapted = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "head", which))
        adapted.head = torch.nn.Linear(model.feature_dim, train.num_classes).to(device_of(model))
    return train_head(adapted, features_of(adapted, train), train.y, SETTING_RECIPES["fast"]["frozen"], seed)


def pretraining_set(scenario: Scenario, data: Splits) -> Dataset:
    """What the networks are pretrained on: another data set's training split (`pretrain_dataset`, e.g. JHT's
    CIFAR-100), the victim's training set ("victim"), or ("disjoint") the loaded training split's other images
    (its classes); all of them, or the first or a seeded draw of `pretrain_size` of them."""
    if scenario.pretrain_dataset is not None:
        other = cached_splits(scenario.pretrain_dataset, scenario.pretrain_data_root).train
        if other.shape != data.train.shape:
            raise ConfigError(f"pretrain_dataset {scenario.pretrain_dataset} holds images of shape {other.shape} and "
                              f"{scenario.dataset} of shape {data.train.shape}; pretrain on images of the victim's "
                              "shape.")
        return other if scenario.pretrain_size is None else other.sample(
            scenario.pretrain_size, scenario.seed, "pretrain", scenario.sampling)
    if scenario.pretrain_data != "disjoint":
        return data.train if scenario.pretrain_size is None else data.train.sample(
            scenario.pretrain_size, scenario.seed, "pretrain", scenario.sampling)
    split = cached_splits(scenario.dataset, scenario.data_root).train
    if scenario.classes is not None:
        split = split.select_classes(scenario.classes)
    rest = split.take(torch.nonzero(~torch.isin(split.index, data.train.index)).squeeze(1))
    if scenario.pretrain_size is None:
        return rest
    return rest.sample(scenario.pretrain_size, scenario.seed, "pretrain", scenario.sampling)


def surrogates(scenario: Scenario, reference: Classifier, data: Dataset, cache_dir: str | None) -> list[Classifier]:
    """White-box: the victim's own pretrained network. Grey-box: the same architecture pretrained with another
    seed. Black-box: other architectures (`scenario.surrogates`, default BLACK_BOX without the victim's)."""
    if scenario.knowledge == "white-box":
        return [reference]
    names = scenario.surrogates or ([scenario.model] if scenario.knowledge == "grey-box"
                                    else [m for m in BLACK_BOX if m != scenario.model])
    return [pretrained(scenario, name, derive_seed(scenario.seed, scenario.knowledge, i), data, cache_dir)
            for i, name in enumerate(names)]


def view_labels(kind: str, pad: str) -> tuple[str, ...]:
    """The generator labels of augmented views (reflect padding keeps the labels it was first drawn with)."""
    return (kind,) if pad == "reflect" else (kind, pad)


def pretrained(scenario: Scenario, name: str, seed: int, data: Dataset, cache_dir: str | None) -> Classifier:
    """`name` trained on `data` (the pretraining set) by the pretraining recipe; cached by its config."""
    recipe = scenario.pretrain_recipe
    config = {"pretrained": name, "seed": seed, "recipe": recipe.key(),
              "data": scenario.hash_of(DATA_FIELDS - {"data_root"} | PRETRAIN_FIELDS - {"pretrain_data_root"} |
                                       {"seed"})}

    def build() -> Classifier:
        model = build_model(name, data.shape, data.num_classes, seed=seed)
        return model.to(resolve_device(scenario.device))

    return cached_model(config, build, lambda model: train(model, data, recipe, seed=seed), cache_dir)
