"""The attack protocol and the steps several attacks share (choosing bases, stamping triggers)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch

from ..data import Dataset
from ..errors import ConfigError, check_choice  # noqa: F401 (check_choice: re-exported to the attacks)
from ..models import Classifier
from ..threat import PoisonSet, ThreatModel, Trigger, backdoor_labels

THREAT_FIELDS = ("eps", "target_class", "source_class")  # what a scenario may set that some attacks ignore


class Attack(ABC):
    """The attack protocol: hyper-parameters as dataclass fields, declarations as class variables, one verb
    `craft(train, threat, surrogate, seed, validation) -> PoisonSet`. The runner reads these declarations and
    nothing else about an attack (tests/test_attacks_contract.py checks that it asks for no other attribute).

    `needs`: what the attack asks of a surrogate network ("nothing", its "features" or its "gradients").
    `changes_labels`: whether poisons may carry other labels than their bases (refused under clean-label).
    `targeted`: the attack aims at one test image per trial, which the runner draws (or reads from a setups file)
    and passes in the threat model with the adversarial class.
    `needs_validation`: the attack maximises a loss on the attacker's own validation data (`--val-size`).
    `crafts_together`: `craft_group` crafts several trials' poisons in one optimisation (each trial's poisons
    are those `craft` gives it alone).
    `augments_like_victim`: the attack has an `augment` field that the runner sets to match the victim's
    training recipe unless the scenario sets it.
    `retrains_surrogate`: the attack trains networks while crafting; it has a `recipe` field that the runner sets
    to the recipe its surrogates were pretrained by unless the scenario sets it.
    `honours`: the threat-model fields beyond the budget that the attack reads (of THREAT_FIELDS); a scenario
    setting another one is refused (`threat_fields` narrows it by the attack's own parameters).
    `pursues`: the goal the attack pursues whatever its threat model, or None: integrity when a target or
    source class is set, availability otherwise (`goal`)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs: ClassVar[Literal["nothing", "features", "gradients"]] = "nothing"
    changes_labels: ClassVar[bool] = True
    targeted: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = False
    crafts_together: ClassVar[bool] = False
    augments_like_victim: ClassVar[bool] = False
    retrains_surrogate: ClassVar[bool] = False
    honours: ClassVar[frozenset[str]] = frozenset()
    pursues: ClassVar[Literal["integrity", "availability"] | None] = None

    @abstractmethod
    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        """The poisons against `train` under `threat`, seeded by `seed`."""

    def craft_group(self, train: Dataset, threats: Sequence[ThreatModel],
                    surrogate: Classifier | list[Classifier] | None, seeds: Sequence[int]) -> list[PoisonSet]:
        """Several trials' poisons (one optimisation where `crafts_together`)."""
        return [self.craft(train, t, surrogate, seed=s) for t, s in zip(threats, seeds, strict=True)]

    def check_threat(self, threat: ThreatModel) -> None:
        """A ConfigError if the threat model lacks what the attack needs (checked before any network trains)."""
        return None

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        """A ConfigError if these parameters cannot work on C×H×W images of `shape` (a trigger that does not fit):
        the runner asks before it writes or trains anything."""
        return None

    def threat_fields(self) -> frozenset[str]:
        """The threat-model fields (of THREAT_FIELDS) that this attack, with these parameters, reads."""
        return self.honours

    def single_target(self, scenario) -> bool:
        """Whether trials under `scenario` (anything with a target and a source class) run the single-target
        protocol: the runner draws one target test image and the attacker's class per trial. A targeted attack
        does unless given a source class (an attack that also reads one then aims at that class's test images)."""
        return self.targeted and scenario.source_class is None

    def goal(self, threat: ThreatModel) -> Literal["integrity", "availability"] | None:
        """What the attack pursues against `threat` (or a scenario: anything with a target and a source class);
        None: nothing, the clean baseline."""
        if self.pursues is not None:
            return self.pursues
        return "integrity" if threat.target_class is not None or threat.source_class is not None else "availability"


class CleanLabelTargeted(Attack):
    """An attack on one target image per trial by poisons that keep their bases' labels within the eps box."""

    changes_labels: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    honours: ClassVar[frozenset[str]] = frozenset({"eps"})
    pursues: ClassVar[Literal["integrity", "availability"] | None] = "integrity"


class FeatureSpaceAttack(CleanLabelTargeted):
    """A clean-label targeted attack that moves the poisons' features on the surrogate; one optimisation can
    carry several trials (`craft_group`)."""

    needs: ClassVar[Literal["nothing", "features", "gradients"]] = "features"
    crafts_together: ClassVar[bool] = True

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        return self.craft_group(train, [threat], surrogate, [seed])[0]

    @abstractmethod
    def craft_group(self, train: Dataset, threats: Sequence[ThreatModel],
                    surrogate: Classifier | list[Classifier] | None, seeds: Sequence[int]) -> list[PoisonSet]:
        """Several trials' poisons in one optimisation (each trial's are those `craft` gives it alone)."""


class GradientAttack(CleanLabelTargeted):
    """A clean-label targeted attack through the surrogate's training gradients, augmenting as the victim does."""

    needs: ClassVar[Literal["nothing", "features", "gradients"]] = "gradients"
    augments_like_victim: ClassVar[bool] = True


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


def backdoor_fields(mode: str) -> frozenset[str]:
    """A dirty-label backdoor reads the target class when all-to-one; all-to-all maps class i to i + 1."""
    return frozenset({"target_class"} if mode == "all-to-one" else ())
