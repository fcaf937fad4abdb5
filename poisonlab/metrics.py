"""Clean accuracy, test error and attack success rate, each a count with its Wilson 95% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import Dataset
from .models import Classifier, predict
from .threat import PoisonSet


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (0, 1) when there are no trials."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """`successes` out of `trials`, with the Wilson 95% interval."""

    successes: int
    trials: int

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials)


def clean_accuracy(model: Classifier, test: Dataset) -> Rate:
    return Rate(int((predict(model, test.x) == test.y).sum()), len(test))


def test_error(model: Classifier, test: Dataset) -> Rate:
    acc = clean_accuracy(model, test)
    return Rate(acc.trials - acc.successes, acc.trials)


def attack_success_rate(model: Classifier, test: Dataset, poison: PoisonSet) -> Rate | None:
    """Backdoor success: among test images the trigger should move (true class is not the attacker's target),
    the fraction classified as the attacker's target once the trigger is applied. Class-targeted success: the
    fraction of test images of the source class classified as the target class. None for other attacks."""
    if poison.source_class is not None:
        source = test.y == poison.source_class
        return Rate(int((predict(model, test.x[source]) == poison.target_class).sum()), int(source.sum()))
    if poison.trigger is None:
        return None
    wanted = poison.backdoor_targets(test.y)
    eligible = wanted != test.y
    hits = predict(model, poison.trigger.apply(test.x[eligible])) == wanted[eligible]
    return Rate(int(hits.sum()), int(eligible.sum()))


def targeted_success(model: Classifier, x: torch.Tensor, adversarial_class: torch.Tensor) -> Rate:
    """Targeted poisoning success: how many target images are classified as their adversarial class."""
    return Rate(int((predict(model, x) == adversarial_class).sum()), len(x))
