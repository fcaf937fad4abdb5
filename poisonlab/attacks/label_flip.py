"""Random label flipping at a budget: the simplest availability (or targeted-class) poisoning."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from ..data import Dataset
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import Attack, check_choice, choose_bases, require_target


@dataclass(frozen=True)
class LabelFlip(Attack):
    """Flip the labels of `budget` random training samples, to a random other class or to the target class.

    to="random": each chosen sample gets a uniformly drawn wrong label (availability);
    to="target": samples outside the target class are relabelled as the target class.
    """

    name: ClassVar[str] = "label-flip"
    summary: ClassVar[str] = "flip labels of random samples to a random other class or to the target class"

    to: str = "random"

    def __post_init__(self) -> None:
        check_choice("to", self.to, ("random", "target"))

    def threat_fields(self) -> frozenset[str]:
        return frozenset({"target_class"} if self.to == "target" else ())

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        g = generator(seed, self.name)
        if self.to == "target":
            target = require_target(threat, self.name)
            candidates = torch.nonzero(train.y != target).squeeze(1)
            indices = choose_bases(candidates, threat.budget, g, f"samples outside target class {target}")
            labels = torch.full((len(indices),), target, dtype=torch.long)
        else:
            target = None
            indices = choose_bases(torch.arange(len(train)), threat.budget, g, "training samples")
            shift = torch.randint(1, threat.num_classes, (len(indices),), generator=g)
            labels = (train.y[indices] + shift) % threat.num_classes
        return PoisonSet(indices, train.x[indices].clone(), labels, threat.num_classes, self.name, target,
                         params=asdict(self))
