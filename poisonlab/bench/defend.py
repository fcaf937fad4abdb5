"""A defense in a trial's loop: detect-and-retrain, or a defended training procedure; counts for the report."""

from __future__ import annotations

import copy
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


def defend(defense, build: Callable[[], Classifier], clean_train: Dataset, poison: PoisonSet, victim: Classifier,
           clean_victim: Classifier, recipe: TrainRecipe, seed: int, budget: int,
           test: Dataset) -> tuple[nn.Module, dict]:
    """The defended victim and the defense's own counts (detection, flagged classes, rejections, certificates).

    Inspection and input filters assume, as their papers do, that the defender holds a few clean images: a
    `clean_fraction` of the training set taken before poisoning."""
    poisoned = poison.apply(clean_train)
    if defense.kind == "inspection":
        held = defense.defender_data(clean_train, seed)
        inspection = defense.inspect(victim, held, seed)
        on_clean = defense.inspect(clean_victim, held, seed)
        counts = {"flagged_classes": inspection.flagged, "clean_victim_flagged_classes": on_clean.flagged,
                  "anomaly_index": inspection.anomaly_index.tolist(), "mask_norms": inspection.mask_norms.tolist()}
        return defense.mitigate(copy.deepcopy(victim), held, inspection, recipe, seed), counts
    if defense.kind == "input-filter":
        guarded = defense.fit(victim, defense.defender_data(clean_train, seed), seed)
        counts = {"rejected_clean": rejections(guarded, test.x)}
        if poison.trigger is not None:
            eligible = poison.backdoor_targets(test.y) != test.y
            counts["rejected_triggered"] = rejections(guarded, poison.trigger.apply(test.x[eligible]))
        return guarded, counts
    if isinstance(defense, Detector):
        scores = defense.score(poisoned, victim if defense.needs_model else None, seed=seed)
        keep = removal_mask(scores, defense.n_remove(len(poisoned), budget))
        defended = victim if keep.all() else train(build(), poisoned.take(torch.nonzero(keep).squeeze(1)), recipe,
                                                   seed=seed)
        return defended, detection_metrics(scores, poison_mask(poison, poisoned), keep)
    defended, counts = defense.fit(build, poisoned, recipe, seed)
    if hasattr(defended, "votes"):
        counts["certified_accuracy"] = certified_accuracy(defended.votes(test.x), test.y)
    return defended, counts


def rejections(guarded, x: torch.Tensor, batch_size: int = 1024) -> int:
    """How many of `x` an input filter rejects, asked in the chunks `predict` uses (so its memo serves both)."""
    return sum(int(guarded.rejected(chunk).sum()) for chunk in x.split(batch_size))
