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
    """`successes` out of `total` (test points, target images or trials, as the caller counts), with the Wilson
    95% interval."""

    successes: int
    total: int

    @property
    def value(self) -> float:
        return self.successes / self.total if self.total else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.total)


def pct(value: float | None, ci: list[float] | tuple[float, float] | None = None) -> str:
    """A rate as a percentage with one decimal, its interval in brackets; "–" for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{100 * value:.1f}%"
    return f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else text


def clean_accuracy(model: Classifier, test: Dataset) -> Rate:
    return Rate(int((predict(model, test.x) == test.y).sum()), len(test))


def test_error(model: Classifier, test: Dataset) -> Rate:
    acc = clean_accuracy(model, test)
    return Rate(acc.total - acc.successes, acc.total)


@dataclass(frozen=True)
class AttackInputs:
    """The test inputs the attacker wants classified as `wanted` (one label per input)."""

    x: torch.Tensor
    wanted: torch.Tensor


def attack_inputs(poison: PoisonSet, test: Dataset, target_image: torch.Tensor | None = None) -> AttackInputs | None:
    """What an attack's success is measured on. Targeted: the target image(s), wanted as the attacker's class.
    Class-targeted (a source class): the test images of the source class, wanted as the target class. Backdoor:
    the test images the trigger should move (true class is not what the attacker wants for them), with the
    trigger applied. None for attacks without such a goal (availability)."""
    if target_image is not None:
        return AttackInputs(target_image, torch.full((len(target_image),), poison.target_class, dtype=torch.long))
    if poison.source_class is not None:
        source = test.x[test.y == poison.source_class]
        return AttackInputs(source, torch.full((len(source),), poison.target_class, dtype=torch.long))
    if poison.trigger is None:
        return None
    wanted = poison.backdoor_targets(test.y)
    eligible = wanted != test.y
    return AttackInputs(poison.trigger.apply(test.x[eligible]), wanted[eligible])


def attack_success_rate(model: Classifier, test: Dataset, poison: PoisonSet,
                        target_image: torch.Tensor | None = None) -> Rate | None:
    """The share of the attack's inputs (`attack_inputs`) that `model` classifies as the attacker wants."""
    inputs = attack_inputs(poison, test, target_image)
    if inputs is None:
        return None
    return Rate(int((predict(model, inputs.x) == inputs.wanted).sum()), len(inputs.wanted))
