"""The attack protocol and the steps several attacks share (choosing bases, stamping triggers)."""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol

import torch

from ..data import Dataset
from ..errors import ConfigError
from ..models import Classifier
from ..threat import PoisonSet, ThreatModel, Trigger, backdoor_labels


class Attack(Protocol):
    """Hyper-parameters as dataclass fields, one verb: craft(train, threat, surrogate, seed, validation) -> PoisonSet.

    `validation` is the attacker's own held-out data, which bilevel attacks maximise their loss on.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    needs: ClassVar[Literal["nothing", "features", "gradients"]]
    changes_labels: ClassVar[bool]

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet: ...


def choose_bases(candidates: torch.Tensor, budget: int, g: torch.Generator, what: str) -> torch.Tensor:
    """`budget` distinct indices drawn (seeded) from `candidates`, or a clear error if there are too few."""
    if budget > len(candidates):
        raise ConfigError(f"budget of {budget} poisons exceeds the {len(candidates)} {what}; lower the budget.")
    return candidates[torch.randperm(len(candidates), generator=g)[:budget]].sort().values


def require_target(threat: ThreatModel, attack: str) -> int:
    if threat.target_class is None:
        raise ConfigError(f"{attack} in this mode needs a target class: pass --target-class (0.."
                          f"{threat.num_classes - 1}).")
    return threat.target_class


def dirty_label_backdoor(attack: str, train: Dataset, threat: ThreatModel, trigger: Trigger,
                         mode: Literal["all-to-one", "all-to-all"], g: torch.Generator, params: dict) -> PoisonSet:
    """Stamp `trigger` on `budget` training images and relabel them with the attacker's target (Gu et al. 2017)."""
    if mode == "all-to-one":
        target = require_target(threat, attack)
        candidates = torch.nonzero(train.y != target).squeeze(1)
        what = f"training samples outside target class {target}"
    else:
        target, candidates, what = None, torch.arange(len(train)), "training samples"
    indices = choose_bases(candidates, threat.budget, g, what)
    labels = backdoor_labels(train.y[indices], mode, target, threat.num_classes)
    return PoisonSet(indices, trigger.apply(train.x[indices]), labels, threat.num_classes, attack, target, trigger,
                     mode, params=params)


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, allowed))}.")
