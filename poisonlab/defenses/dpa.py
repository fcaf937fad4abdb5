"""Deep Partition Aggregation (Levine & Feizi 2021): k models on hash-partitioned data, a plurality vote, and a
certificate of how many poisoned samples cannot change each prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics import pct
from ..models import predict
from ..seeding import derive_seed
from .base import Counts, Defended, Defense, DefenseContext


@dataclass(frozen=True)
class CertificateCounts(Counts):
    """Certified accuracy of the vote on the test set at radius 0, 1, ... (Levine & Feizi's certificate)."""

    certified_accuracy: list[float]

    @classmethod
    def summarise(cls, counts: list[CertificateCounts]) -> dict:
        """The curve averaged over trials (each trial's as long as its largest certified radius allows)."""
        length = min(len(c.certified_accuracy) for c in counts)
        return {"certified_accuracy": [sum(c.certified_accuracy[r] for c in counts) / len(counts)
                                       for r in range(length)]}

    @staticmethod
    def describe(summary: dict) -> str:
        return "certified accuracy at radius 0, 1, …: " + ", ".join(pct(v) for v in summary["certified_accuracy"])


@dataclass
class DPA(Defense):
    """Split the training set into `partitions` parts by a hash of each image (not of its label, so a label flip
    stays in its part), train one model per part, predict by plurality vote (ties to the smaller class).

    The certificate (Levine & Feizi 2021, Theorem 1): a prediction with votes n_c is unchanged by any ρ insertions
    or removals of training samples while n_c ≥ max_{c'≠c} (n_{c'} + [c' < c]) + 2ρ. A poison that replaces its
    base counts as two (one removal, one insertion); a label-only flip as one."""

    name: ClassVar[str] = "dpa"
    summary: ClassVar[str] = "k models on hash-partitioned data, plurality vote, certified radius (Levine & Feizi)"
    Counts: ClassVar[type] = CertificateCounts
    partitions: int = 10

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"dpa: partitions must be at least 1; got {self.partitions}.")

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """Each image's part, from its 8-bit pixel values alone (deterministic, seed-independent)."""
        pixels = (x.flatten(1) * 255).round().long()
        weights = torch.randint(1, 2**20, (pixels.shape[1],), generator=torch.Generator().manual_seed(1))
        return (pixels * weights).sum(1) % self.partitions

    def defend(self, context: DefenseContext) -> Defended:
        """One victim per partition of the poisoned set (the setting's training), their vote, its certificate."""
        parts = self.partition(context.poisoned.x)
        sizes = torch.bincount(parts, minlength=self.partitions)
        if int(sizes.min()) == 0:
            raise ConfigError(f"dpa: {self.partitions} partitions of {len(parts)} training samples leave some "
                              "empty; use fewer partitions.")
        models = [context.retrain(torch.nonzero(parts == k).squeeze(1), derive_seed(context.seed, "dpa", k))
                  for k in range(self.partitions)]
        vote = VoteEnsemble(models, context.poisoned.num_classes)
        return Defended(vote, CertificateCounts(certified_accuracy(vote.votes(context.test.x), context.test.y)))


class VoteEnsemble(nn.Module):
    """The plurality vote of `models`; forward gives vote counts, less a tiny tie-break toward smaller classes."""

    def __init__(self, models: list[nn.Module], num_classes: int):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.num_classes = num_classes

    @torch.no_grad()
    def votes(self, x: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(len(x), self.num_classes)
        for model in self.members:
            counts += nn.functional.one_hot(predict(model, x), self.num_classes).float()
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.votes(x) - 1e-3 * torch.arange(self.num_classes) / self.num_classes


def certified_radius(votes: torch.Tensor) -> torch.Tensor:
    """Per row of vote counts: how many training insertions/removals provably leave the vote unchanged."""
    predicted = (votes - 1e-3 * torch.arange(votes.shape[1]) / votes.shape[1]).argmax(1)
    top = votes.gather(1, predicted[:, None]).squeeze(1)
    rivals = votes + (torch.arange(votes.shape[1])[None, :] < predicted[:, None]).float()
    rivals.scatter_(1, predicted[:, None], float("-inf"))
    return torch.div(top - rivals.max(1).values, 2, rounding_mode="floor").long().clamp_min(0)


def certified_accuracy(votes: torch.Tensor, y: torch.Tensor, max_radius: int | None = None) -> list[float]:
    """Certified accuracy at radius 0, 1, …: the share of test points classified correctly and certified at
    least that far."""
    predicted = (votes - 1e-3 * torch.arange(votes.shape[1]) / votes.shape[1]).argmax(1)
    radius = torch.where(predicted == y, certified_radius(votes), torch.full_like(y, -1))
    top = int(votes.sum(1).max()) // 2 + 1 if max_radius is None else max_radius + 1
    return [float((radius >= r).float().mean()) for r in range(top)]
