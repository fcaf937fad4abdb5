"""A defense in a trial's loop: detect-and-retrain, or a defended training procedure; counts for the report."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data import Dataset
from ..defenses import Detector, certified_accuracy, detection_metrics, removal_mask
from ..models import Classifier, TrainRecipe, train
from ..threat import PoisonSet


def poison_mask(poison: PoisonSet, poisoned: Dataset) -> torch.Tensor:
    """True for the samples of the poisoned training set that the attacker placed or changed."""
    mask = torch.zeros(len(poisoned), dtype=torch.bool)
    if len(poison):
        n_clean = len(poisoned) - (len(poison) if poison.insertion == "add" else 0)
        mask[n_clean + torch.arange(len(poison)) if poison.insertion == "add" else poison.indices] = True
    return mask


def defend(defense, build: Callable[[], Classifier], poisoned: Dataset, poison: PoisonSet, victim: Classifier,
           recipe: TrainRecipe, seed: int, budget: int, test: Dataset) -> tuple[nn.Module, dict]:
    """The defended victim and the defense's own counts (detection, or certified accuracy)."""
    if isinstance(defense, Detector):
        scores = defense.score(poisoned, victim if defense.needs_model else None, seed=seed)
        keep = removal_mask(scores, defense.n_remove(len(poisoned), budget))
        defended = train(build(), poisoned.take(torch.nonzero(keep).squeeze(1)), recipe, seed=seed)
        return defended, detection_metrics(scores, poison_mask(poison, poisoned), keep)
    defended = defense.fit(build, poisoned, recipe, seed)
    counts = {}
    if hasattr(defended, "votes"):
        counts["certified_accuracy"] = certified_accuracy(defended.votes(test.x), test.y)
    return defended, counts
