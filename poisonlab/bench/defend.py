"""A defense in a trial's loop: the context it sees (the poisoned training set, the victim, how the setting
retrains), built once for every kind of defense."""

from __future__ import annotations

import torch

from ..defenses import Defended, DefenseContext
from ..models import Classifier
from ..threat import PoisonSet
from .plan import Plan
from .victims import FromScratch


def defend_trial(plan: Plan, victims: FromScratch, threat, poison: PoisonSet, victim: Classifier,
                 control: Classifier, attack_inputs: torch.Tensor | None) -> Defended:
    """The defended victim and the defense's counts."""
    poisoned = poison.apply(victims.data.train)
    context = DefenseContext(
        poisoned=poisoned, is_poison=poison.is_poison(poisoned), clean_train=victims.data.train, victim=victim,
        control=control, retrain=lambda rows, seed: victims.train(poison, rows, seed), build=victims.build,
        representation=lambda space: victims.representation(victim, poison, space), recipe=plan.scenario.recipe,
        setting=plan.scenario.setting, seed=victims.seed, budget=threat.budget, test=victims.data.test,
        attack_inputs=attack_inputs, target_class=threat.target_class)
    return plan.defense.defend(context)
