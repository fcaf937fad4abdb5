"""The defense protocol: one verb, `defend(context) -> Defended(model, counts)`, for every kind of defense
(detect-and-retrain, model inspection, test-time filtering, robust or certified training). Each kind's counts
know how to summarise themselves over trials and how to describe the summary in one table cell, so neither
the trial loop nor the report asks which kind a defense is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..models import Classifier, TrainRecipe
from ..seeding import generator


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may use in a trial. The defender sees the training set (`poisoned`), the victim trained on
    it and the recipe; `is_poison`, the control and `attack_inputs` are for measuring the defense only.

    `retrain(rows, seed)` trains the setting's victim (a fresh network from scratch, a fresh head on a frozen
    extractor, a fine-tuned copy) on those rows of `poisoned` (None: all), with the trial's seed unless given.
    `build()` is a fresh network for defenses that train it their own way. `representation(space)` is the
    victim's penultimate-layer features of `poisoned` ("features") or its flattened pixels ("input").
    `clean_train` is the training set before poisoning: the defender's few clean images, which inspection and
    input filters assume (as their papers do), are drawn from it. `attack_inputs` are the test inputs the
    attacker wants misclassified (triggered test images, the source class, the target image), or None."""

    poisoned: Dataset
    is_poison: torch.Tensor
    clean_train: Dataset
    victim: Classifier
    control: Classifier
    retrain: Callable[[torch.Tensor | None, int | None], Classifier]
    build: Callable[[], Classifier]
    representation: Callable[[str], torch.Tensor]
    recipe: TrainRecipe
    setting: str
    seed: int
    budget: int
    test: Dataset
    attack_inputs: torch.Tensor | None = field(default=None, repr=False)
    target_class: int | None = None

    @classmethod
    def from_scratch(cls, poisoned: Dataset, victim: Classifier, build: Callable[[], Classifier],
                     recipe: TrainRecipe, seed: int, budget: int, test: Dataset, **known) -> DefenseContext:
        """A context for a victim trained from scratch (`build()` then `train` by `recipe`), outside a trial:
        retraining is `train(build(), rows of poisoned, recipe)`. `known` may give the measuring fields
        (is_poison, clean_train, control, attack_inputs, target_class); the clean training set defaults to
        `poisoned` itself, the control to the victim."""
        from ..models import train
        from .detect import representation

        def retrain(rows: torch.Tensor | None, retrain_seed: int | None) -> Classifier:
            data = poisoned if rows is None else poisoned.take(rows)
            return train(build(), data, recipe, seed=seed if retrain_seed is None else retrain_seed)

        fields = {"is_poison": torch.zeros(len(poisoned), dtype=torch.bool), "clean_train": poisoned,
                  "control": victim, **known}
        return cls(poisoned=poisoned, victim=victim, retrain=retrain, build=build,
                   representation=lambda space: representation(poisoned, victim, space), recipe=recipe,
                   setting="scratch", seed=seed, budget=budget, test=test, **fields)


class Counts:
    """A defense's per-trial counts (a dataclass of plain numbers and lists, stored in the trial's row)."""

    @classmethod
    def summarise(cls, counts: list) -> dict:
        """The summary row's fields for a scenario's trials."""
        return {}

    @staticmethod
    def describe(summary: dict) -> str:
        """One table cell saying what the defense saw, from the fields `summarise` gave."""
        return "–"


@dataclass(frozen=True)
class NoCounts(Counts):
    """A defense that only changes the victim (its effect is in the row's accuracy and success)."""


@dataclass(frozen=True)
class Defended:
    """The defended victim (it predicts like any classifier) and the defense's counts."""

    model: nn.Module
    counts: Counts


class Defense(ABC):
    """Hyper-parameters as dataclass fields; `defend` is the one verb; `Counts` is the type it returns counts
    of; `settings` the victims' training settings it applies to (a defense that trains the victim its own
    way from scratch cannot keep a frozen extractor)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Counts: ClassVar[type[Counts]] = NoCounts
    settings: ClassVar[tuple[str, ...]] = ("frozen", "finetune", "scratch")

    @abstractmethod
    def defend(self, context: DefenseContext) -> Defended:
        """The defended victim and this trial's counts."""

    def check(self, setting: str) -> None:
        if setting not in self.settings:
            raise ConfigError(f"{self.name} trains the victim its own way, from scratch; it does not apply to the "
                              f"{setting} setting (use --setting scratch, or another defense).")


def defender_images(train_set: Dataset, fraction: float, seed: int, purpose: str, at_least: int = 1) -> Dataset:
    """The defender's clean images: a seeded random `fraction` of the training set before poisoning."""
    n = max(at_least, round(fraction * len(train_set)))
    return train_set.take(torch.randperm(len(train_set), generator=generator(seed, purpose))[:n])


def check_trains_by_steps(name: str, recipe: TrainRecipe) -> None:
    if recipe.optimizer == "exact":
        raise ConfigError(f"{name} trains by gradient steps: use --optimizer adam or sgd, not exact.")
