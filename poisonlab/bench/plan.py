"""A scenario made ready to run: its attack and defense built, every setting checked against what they declare.
Everything a user can get wrong is refused here, with what was given and what is expected, before any data is
loaded or any network trained; nothing below re-checks it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attacks import THREAT_FIELDS, Attack, make_attack
from ..data import DATASETS
from ..defenses import Defense, make_defense
from ..device import resolve_device
from ..errors import ConfigError, unknown
from ..models import MODELS
from ..seeding import derive_seed
from .scenario import Scenario

DEFAULTS = {"eps": 1.0, "target_class": None, "source_class": None}


@dataclass(frozen=True)
class Plan:
    """`pretrains`: the trials start from networks pretrained on the clean training set (the victim's own
    architecture for frozen and fine-tuned victims and the white-box attacker, surrogates for the others),
    so the scenario's trials share one drawn training set; otherwise each trial draws its own."""

    scenario: Scenario
    attack: Attack
    defense: Defense | None
    device: torch.device

    @property
    def targeted(self) -> bool:
        """Each trial aims at one target test image (`Attack.single_target`)."""
        return self.attack.single_target(self.scenario)

    @property
    def pretrains(self) -> bool:
        return self.scenario.setting != "scratch" or self.attack.needs != "nothing"


def make_plan(scenario: Scenario) -> Plan:
    """The scenario's attack (its `augment` matched to the victim's recipe and its retraining `recipe` to the
    surrogates' pretraining recipe, where it declares so) and defense,
    after every check that needs no data."""
    attack = make_attack(scenario.attack, **scenario.attack_params)
    if attack.augments_like_victim and "augment" not in scenario.attack_params:
        attack = dataclasses.replace(attack, augment=scenario.recipe.augment != "none")
    if attack.retrains_surrogate and "recipe" not in scenario.attack_params:
        attack = dataclasses.replace(attack, recipe=scenario.pretrain_recipe)
    defense = None if scenario.defense == "none" else make_defense(scenario.defense, **scenario.defense_params)
    plan = Plan(scenario, attack, defense, resolve_device(scenario.device))
    check_threat_fields(plan)
    check_data_root(scenario)
    check_networks(plan)
    check_defense(plan)
    return plan


def check_data_root(scenario: Scenario) -> None:
    if scenario.dataset not in DATASETS:
        raise unknown("dataset", scenario.dataset, DATASETS)
    root = scenario.data_root
    if root is not None and not DATASETS[scenario.dataset].reads_files:
        raise ConfigError(f"{scenario.dataset} is built in and reads no files, so --data-root {root} would be "
                          "ignored: leave it out (or choose a dataset that reads files).")
    if root is not None and not exists(root):
        raise ConfigError(f"--data-root {root} does not exist; give the folder (for npz: the file) holding the "
                          f"{scenario.dataset} files.")


def exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a name no file can have (a NUL byte, too long)
        return False


def check_threat_fields(plan: Plan) -> None:
    """A threat-model field the attack does not read is refused (it would run as if it were not set)."""
    scenario, attack = plan.scenario, plan.attack
    for name in THREAT_FIELDS:
        if getattr(scenario, name) != DEFAULTS[name] and name not in attack.threat_fields():
            raises = ", ".join(sorted(attack.threat_fields())) or "none of them"
            raise ConfigError(f"{attack.name} does not read {name} (it reads {raises}); a run with "
                              f"{name}={getattr(scenario, name)} would ignore it: leave it out.")
    if plan.targeted and scenario.target_class is not None:
        raise ConfigError(f"{attack.name} without a source class runs the single-target protocol, which draws each "
                          "trial's target image and attacker's class: leave --target-class out, or give "
                          "--source-class too for the class-level protocol.")
    if scenario.setups is not None and not plan.targeted:
        raise ConfigError(f"--setups gives the targets of targeted attacks (feature-collision, convex-polytope, ...); "
                          f"{attack.name} has no target image here: leave it out.")


def check_networks(plan: Plan) -> None:
    """Knowledge, surrogates and pretraining are for attacks that craft on a network; the device for the
    targeted attacks (every other attack runs on the CPU)."""
    scenario, attack = plan.scenario, plan.attack
    for name in (scenario.model, *(scenario.surrogates or ())):
        if name not in MODELS:
            raise unknown("model", name, MODELS)
    if scenario.model == "lasso" and scenario.recipe.optimizer != "exact":
        raise ConfigError("the lasso model is solved exactly: pass --optimizer exact (its L1 penalty is set by --C).")
    if scenario.recipe.optimizer == "exact" and scenario.model in PRETRAINABLE:
        raise ConfigError(f"optimizer 'exact' solves the linear models ({', '.join(LINEAR)}) to optimality; "
                          f"{scenario.model} trains with --optimizer adam or sgd.")
    if attack.needs == "nothing":
        if scenario.knowledge != "white-box" or scenario.surrogates is not None:
            raise ConfigError(f"knowledge and surrogates choose the networks an attacker crafts on; {attack.name} "
                              "crafts on none: leave --knowledge and surrogates out.")
    if scenario.pretrain is not None and not plan.pretrains:
        raise ConfigError(f"pretrain is the recipe of the networks a victim starts from or an attacker crafts on; "
                          f"{attack.name} trained from scratch uses none: leave it out.")
    if (scenario.pretrain_size is not None or scenario.pretrain_data == "disjoint" or
            scenario.pretrain_dataset is not None) and not plan.pretrains:
        raise ConfigError(f"pretrain_data, pretrain_dataset and pretrain_size say what the networks a victim starts "
                          f"from (or an attacker crafts on) are pretrained on; {attack.name} trained from scratch uses "
                          "none: leave them out.")
    if scenario.pretrain_dataset is not None:
        if scenario.pretrain_dataset not in DATASETS:
            raise unknown("pretrain_dataset", scenario.pretrain_dataset, DATASETS)
        if scenario.pretrain_data == "victim":
            raise ConfigError(f"pretrain_data victim pretrains on the victim's training set and pretrain_dataset "
                              f"{scenario.pretrain_dataset} on another data set: give one of them.")
    elif scenario.pretrain_data_root is not None:
        raise ConfigError("pretrain_data_root says where pretrain_dataset's files are; give pretrain_dataset too "
                          "(e.g. cifar100).")
    if scenario.recipe.views and scenario.recipe.trainable != "head" and scenario.setting != "frozen":
        raise ConfigError("recipe views (features of augmented views computed once) serve a frozen extractor's "
                          "head; a network whose every layer trains augments each batch anew: leave views out.")
    if scenario.setting != "scratch" and scenario.model not in PRETRAINABLE:
        raise ConfigError(f"the {scenario.setting} setting retrains a pretrained network's last layer or all of "
                          f"it; {scenario.model} has no feature extractor to pretrain: use one of "
                          f"{', '.join(PRETRAINABLE)}, or --setting scratch.")
    if plan.device.type != "cpu" and not attack.targeted:
        raise ConfigError(f"--device {scenario.device} runs the targeted clean-label attacks (the toxic suites); "
                          f"{attack.name} runs on the CPU: leave --device out.")
    if scenario.goal is not None and (goal := attack.goal(scenario)) not in (None, scenario.goal):
        raise ConfigError(f"{attack.name} pursues {goal} here, not goal {scenario.goal}: leave the goal out (each "
                          "attack's is recorded in its rows) or choose an attack that pursues it.")


LINEAR = ("logistic", "linear-svm", "ridge", "lasso")
PRETRAINABLE = tuple(name for name in MODELS if name not in LINEAR)


def check_defense(plan: Plan) -> None:
    if plan.defense is None:
        if plan.scenario.defense_params:
            raise ConfigError(f"defense parameters {plan.scenario.defense_params} are given without a defense; add "
                              "--defense NAME (or leave -d out).")
        return
    plan.defense.check(plan.scenario.setting)
    if plan.device.type != "cpu":
        raise ConfigError(f"defenses run on the CPU; {plan.defense.name} with --device {plan.scenario.device} is not "
                          "supported: leave --device out.")


def trial_seed(scenario: Scenario, trial: int) -> int:
    """Trial i of every scenario with the same seed gets the same split and initialisation (common random
    numbers), so a clean baseline and an attack differ only by the poisons."""
    return derive_seed(scenario.seed, "trial", trial)
