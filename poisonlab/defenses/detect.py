"""What every detector shares: the `Detector` base (score each training sample, higher = more suspicious), the
representation it scores, robust per-class standardisation, removal of the top fraction, and detection metrics."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..data import Dataset
from ..errors import ConfigError
from ..metrics import Rate, pct
from ..models import Classifier
from .base import Counts, Defended, Defense, DefenseContext


@dataclass(frozen=True)
class DetectionCounts(Counts):
    """How many samples a detector scored and removed, how many poisons were present and removed, its AUROC."""

    n_scored: int
    n_removed: int
    removed_poisons: int
    n_poisons_present: int
    detection_auroc: float | None

    @classmethod
    def summarise(cls, counts: list[DetectionCounts]) -> dict:
        """Precision, recall (with its interval) and removal pooled over trials; AUROC averaged."""
        removed = sum(c.n_removed for c in counts)
        caught = sum(c.removed_poisons for c in counts)
        recall = Rate(caught, sum(c.n_poisons_present for c in counts))
        aurocs = [c.detection_auroc for c in counts if c.detection_auroc is not None]
        return {"detection_precision": caught / removed if removed else None,
                "detection_recall": recall.value if recall.total else None,
                "detection_recall_ci": list(recall.ci) if recall.total else None,
                "detection_auroc": sum(aurocs) / len(aurocs) if aurocs else None,
                "removed_fraction": removed / sum(c.n_scored for c in counts)}

    @staticmethod
    def describe(summary: dict) -> str:
        auroc = f"{summary['detection_auroc']:.3f}" if summary["detection_auroc"] is not None else "–"
        return (f"recall {pct(summary['detection_recall'])}, precision {pct(summary['detection_precision'])}, "
                f"AUROC {auroc}, removed {pct(summary['removed_fraction'])}")


@dataclass
class Detector(Defense):
    """A data-sanitisation defense. `score(train, model)` gives one score per training sample (higher = more
    suspicious); the defended victim is retrained without the top `removal` fraction of the training set.

    `ranking` says where the removal happens: "global" ranks the whole training set by score and removes its top
    `removal` fraction (`removal=None`: 1.5× the attacker's budget, the defender's assumed upper bound on the
    number of poisons); "per-class" ranks each class on its own and removes its top `removal` fraction
    (`removal=None`: 1.5× the budget from every class, Tran et al. 2018's rule). `space` is where samples are
    compared: "features" (the penultimate layer of the model trained on the possibly-poisoned data) or "input"
    (raw pixels)."""

    name: ClassVar[str] = "detector"
    summary: ClassVar[str] = ""
    Counts: ClassVar[type] = DetectionCounts
    removal: float | None = None
    space: str = "features"
    ranking: str = "global"

    def __post_init__(self) -> None:
        if self.removal is not None and not 0 < self.removal < 1:
            raise ConfigError(f"{self.name}: removal is the fraction of the training set to drop, in (0, 1); "
                              f"got {self.removal}.")
        if self.ranking not in ("global", "per-class"):
            raise ConfigError(f"{self.name}: ranking must be 'global' (one ranking of the training set) or "
                              f"'per-class' (each class ranked and trimmed on its own); got {self.ranking!r}.")
        if self.space not in ("features", "input"):
            raise ConfigError(f"{self.name}: space must be 'features' or 'input'; got {self.space!r}.")

    @property
    def needs_model(self) -> bool:
        return self.space == "features"

    def score(self, train: Dataset, model: Classifier | None = None, seed: int = 0) -> torch.Tensor:
        """One float per training sample; higher is more suspicious."""
        return self.score_representation(representation(train, model, self.space), train.y, seed)

    @abstractmethod
    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """Scores of representations `z` (N×D) with labels `y`: what each detector defines."""

    def defend(self, context: DefenseContext) -> Defended:
        """Score the training set, remove the most suspicious samples, retrain the victim on the rest."""
        z, y = context.representation(self.space), context.poisoned.y
        scores = self.score_representation(z, y, context.seed)
        keep = self.kept(z, y, scores, context.budget, context.seed)
        if not keep.any():
            raise ConfigError(f"{self.name} flagged every training sample; nothing is left to retrain on.")
        model = context.victim if keep.all() else context.retrain(torch.nonzero(keep).squeeze(1), None)
        return Defended(model, detection_counts(scores, context.is_poison, keep))

    def kept(self, z: torch.Tensor, y: torch.Tensor, scores: torch.Tensor, n_budget: int, seed: int = 0
             ) -> torch.Tensor:
        """True for the samples the detector keeps: its own rule (`flag`) where it has one in use, else the
        `ranking` rule on `scores` given the attacker's budget (a count)."""
        flagged = self.flag(z, y, seed)
        return self.keep_mask(scores, y, n_budget) if flagged is None else ~flagged

    def flag(self, z: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor | None:
        """The samples to remove by the detector's own rule (a boolean per sample; `seed` as for the scores), or
        None: the `ranking` rule on the scores."""
        return None

    def keep_mask(self, scores: torch.Tensor, y: torch.Tensor, n_budget: int) -> torch.Tensor:
        """True for the samples kept by the `ranking` rule, given the attacker's budget (a count)."""
        if self.ranking == "global":
            return removal_mask(scores, self.n_remove(len(scores), n_budget))
        keep = torch.ones(len(scores), dtype=torch.bool)
        for _, idx in by_class(y):
            keep[idx] = removal_mask(scores[idx], self.n_remove(len(idx), n_budget))
        return keep

    def n_remove(self, n_train: int, n_budget: int) -> int:
        """How many of `n_train` samples (the training set, or one class) to drop: `removal` of them, or 1.5× the
        budget (at most all but one)."""
        n = round(self.removal * n_train) if self.removal is not None else round(1.5 * n_budget)
        return min(max(n, 0), n_train - 1)


def representation(train: Dataset, model: Classifier | None, space: str, batch_size: int = 1024) -> torch.Tensor:
    """N×D: the model's penultimate-layer features of every training image, or its flattened pixels."""
    if space == "input":
        return train.x.flatten(1)
    if model is None:
        raise ConfigError("this detector scores feature-space representations: it needs the model trained on the "
                          "(possibly poisoned) training set; pass one, or use space='input'.")
    model.eval()
    with torch.no_grad():
        return torch.cat([model.features(b).flatten(1) for b in train.x.split(batch_size)])


def by_class(y: torch.Tensor):
    """(class, indices) for every class present in `y`."""
    for c in torch.unique(y).tolist():
        yield c, torch.nonzero(y == c).squeeze(1)


def robust_z(values: torch.Tensor) -> torch.Tensor:
    """(v − median) / (1.4826 · MAD): a standard normal's scale for clean samples, unmoved by a minority of
    outliers, so that scores from classes of different spread rank on one scale."""
    median = values.median()
    mad = (values - median).abs().median() * 1.4826
    scale = mad if mad > 0 else (values - median).abs().mean().clamp_min(1e-12)
    return (values - median) / scale


def removal_mask(scores: torch.Tensor, n_remove: int) -> torch.Tensor:
    """True for the samples kept: all but the `n_remove` highest scores (ties broken by index, stably)."""
    if scores.isnan().any():
        raise ValueError("detector scores contain NaN")
    keep = torch.ones(len(scores), dtype=torch.bool)
    if n_remove > 0:
        order = torch.sort(scores, descending=True, stable=True).indices
        keep[order[:n_remove]] = False
    return keep


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    """Area under the ROC curve of `scores` for the `positive` samples (ties count one half); None if either
    group is empty."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(scores.double())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, ties given their average rank (Mann-Whitney)."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values)
    ranks[order] = average[inverse]
    return ranks


def detection_counts(scores: torch.Tensor, is_poison: torch.Tensor, keep: torch.Tensor) -> DetectionCounts:
    """Counts and AUROC of a detector against the known poisons (pooled over trials by `summarise`)."""
    removed = ~keep
    return DetectionCounts(len(scores), int(removed.sum()), int((removed & is_poison).sum()), int(is_poison.sum()),
                           auroc(scores, is_poison))
