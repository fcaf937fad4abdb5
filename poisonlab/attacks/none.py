"""The clean baseline: an attack that poisons nothing, so every table has its control row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..data import Dataset
from ..threat import PoisonSet, ThreatModel
from .base import THREAT_FIELDS, Attack


@dataclass(frozen=True)
class NoAttack(Attack):
    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "no poisoning: the clean baseline"
    changes_labels: ClassVar[bool] = False

    def threat_fields(self) -> frozenset[str]:
        """The baseline of any threat model: every field is allowed, none is used."""
        return frozenset(THREAT_FIELDS)

    def goal(self, threat: ThreatModel) -> None:
        return None

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        return PoisonSet(torch.empty(0, dtype=torch.long), torch.empty(0, *train.shape),
                         torch.empty(0, dtype=torch.long), threat.num_classes, self.name)
