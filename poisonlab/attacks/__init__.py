"""Attacks by name: one explicit registry built from plain imports."""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import build
from ..threat import ThreatModel
from .alfa import ALFA
from .back_gradient import BackGradient
from .badnets import BadNets
from .base import THREAT_FIELDS, Attack
from .bilevel_linear import BilevelLinear
from .blended import Blended
from .bullseye_polytope import BullseyePolytope
from .clean_label_backdoor import CleanLabelBackdoor
from .convex_polytope import ConvexPolytope
from .feature_collision import FeatureCollision
from .hidden_trigger import HiddenTrigger
from .label_flip import LabelFlip
from .metapoison import MetaPoison
from .none import NoAttack
from .sleeper_agent import SleeperAgent
from .svm_kkt import SVMKKT
from .witches_brew import WitchesBrew

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (NoAttack, LabelFlip, ALFA, BadNets, Blended, SVMKKT,
                                                       BilevelLinear, BackGradient, FeatureCollision,
                                                       ConvexPolytope, BullseyePolytope, WitchesBrew,
                                                       MetaPoison, HiddenTrigger, CleanLabelBackdoor, SleeperAgent)}


def make_attack(name: str, **params) -> Attack:
    """The attack `name` with hyper-parameters `params`; unknown names and keys are errors listing valid ones."""
    return build("attack", ATTACKS, name, params)


def check_compatible(attack: Attack, threat: ThreatModel, surrogate=None, validation=None,
                     surrogate_from_trial: bool = False) -> None:
    """What the runner checks once before crafting: labels, surrogate (unless the trial builds the surrogates
    itself, from the threat model's knowledge), validation data."""
    if attack.changes_labels and threat.clean_label:
        raise ConfigError(f"{attack.name} changes labels, but the threat model is clean-label; use a clean-label "
                          "attack or set clean_label to false.")
    if attack.needs != "nothing" and surrogate is None and not surrogate_from_trial:
        raise ConfigError(f"{attack.name} needs a surrogate model for its {attack.needs}; none was given.")
    attack.check_threat(threat)
    if attack.needs_validation and (validation is None or len(validation) == 0):
        raise ConfigError(f"{attack.name} maximises the loss on the attacker's validation set: pass --val-size N "
                          "(drawn from the training split, disjoint from the training samples).")


__all__ = ["ALFA", "ATTACKS", "SVMKKT", "THREAT_FIELDS", "Attack", "BackGradient", "BadNets", "BilevelLinear",
           "Blended", "BullseyePolytope", "CleanLabelBackdoor", "ConvexPolytope", "FeatureCollision", "HiddenTrigger",
           "LabelFlip", "MetaPoison", "NoAttack", "SleeperAgent", "WitchesBrew", "check_compatible", "make_attack"]
