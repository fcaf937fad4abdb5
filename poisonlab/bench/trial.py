"""One recipe for every trial, whatever the attack, setting and defense:

    setup (data, threat, target) -> craft -> victims (poisoned, control) -> defend (optional) -> measure -> row

Pure computation: no printing, no files but the model cache (which also keeps poisons: every scenario's first
trial's, and those an attack × defense matrix or a re-run reuses, `reuse_or_craft`). A group of trials of one
scenario runs together, so an attack that `crafts_together` crafts them in one optimisation (each trial's poisons
are those it would get alone)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..attacks import check_compatible
from ..data import Splits
from ..errors import ConfigError, PoisonlabError
from ..metrics import attack_inputs
from ..models import build_model, predict
from ..threat import PoisonSet, ThreatModel, require_poisons
from .defend import defend_trial
from .measure import measure, targeted_part
from .plan import Plan, make_plan, trial_seed
from .rows import DefensePart, TrialRow
from .scenario import Scenario
from .setups import load_setups, usable_setups
from .shared import Networks, pretraining_set, scenario_networks, trial_data
from .targets import Target, choose_target, targeted_threat
from .victims import VICTIMS, FromScratch, control_victim, poisoned_victim


@dataclass(frozen=True)
class TrialSetup:
    trial: int
    seed: int
    data: Splits
    threat: ThreatModel
    target: Target | None
    victims: FromScratch


def run_trials(scenario: Scenario, trials: Sequence[int], cache_dir: str | None = None) -> list[TrialRow]:
    """Run trials `trials` of `scenario`; trained networks are cached in `cache_dir` (None: nothing stored)."""
    plan, networks, setups = prepare_trials(scenario, trials, cache_dir)
    crafted = craft(plan, networks, setups) if cache_dir is None else reuse_or_craft(plan, networks, setups, cache_dir)
    together = len(trials) if plan.attack.crafts_together else 1
    return [finish(plan, networks, setup, poison, seconds, together, cache_dir)
            for setup, (poison, seconds) in zip(setups, crafted, strict=True)]


def prepare_trials(scenario: Scenario, trials: Sequence[int], cache_dir: str | None
                   ) -> tuple[Plan, Networks | None, list[TrialSetup]]:
    """The plan, the scenario's pretrained networks (trained or loaded) and each trial's setup."""
    plan = make_plan(scenario)
    networks = scenario_networks(plan, cache_dir)
    return plan, networks, [set_up(plan, networks, trial) for trial in trials]


def check_scenario(scenario: Scenario) -> Plan:
    """Every check a scenario needs before its first trial trains (raises ConfigError or DataError)."""
    plan = make_plan(scenario)
    data = trial_data(plan, 0)
    if plan.pretrains and not len(pretraining_set(scenario, data)):
        raise ConfigError(f"pretrain_data=disjoint pretrains the extractor on the training images the victim never "
                          f"sees, and the victim's training set holds all {len(data.train)} of {scenario.dataset}'s: "
                          "set train_size below that (JHT's victims train on 2,500 of 50,000), or protocol: fast.")
    threat = scenario_threat(plan, data)
    check_compatible(plan.attack, threat, validation=data.val, surrogate_from_trial=True)
    plan.attack.check_shape(data.train.shape)
    for name in (scenario.model, *(scenario.surrogates or ())):  # the architecture fits the images
        build_model(name, data.train.shape, data.train.num_classes)
    if scenario.setups is not None:
        usable = len(usable_setups(load_setups(scenario.setups), data.test))
        if scenario.trials > usable:
            raise ConfigError(f"{scenario.setups} has {usable} setups whose target is in the loaded test split; "
                              f"ask for at most {usable} trials (--trials {usable}).")
    return plan


def scenario_threat(plan: Plan, data: Splits) -> ThreatModel:
    s = plan.scenario
    threat = ThreatModel.for_data(data.train, s.budget, eps=s.eps, clean_label=s.clean_label,
                                  target_class=s.target_class, source_class=s.source_class,
                                  goal=plan.attack.goal(s) or s.goal, knowledge=s.knowledge, setting=s.setting)
    require_poisons(s.budget, threat, plan.attack.name)
    return threat


def set_up(plan: Plan, networks: Networks | None, trial: int) -> TrialSetup:
    """The trial's data, its threat model (with the target image, for a targeted attack) and its victims."""
    seed, data = trial_seed(plan.scenario, trial), trial_data(plan, trial)
    threat, target = scenario_threat(plan, data), None
    if plan.targeted:
        target = choose_target(plan.scenario, trial, data, networks, threat.budget, seed)
        threat = targeted_threat(threat, target, data)
    return TrialSetup(trial, seed, data, threat, target, VICTIMS[plan.scenario.setting](plan.scenario, data, networks,
                                                                                       seed))


def craft(plan: Plan, networks: Networks | None, setups: list[TrialSetup]) -> list[tuple[PoisonSet, float]]:
    """Each trial's poisons and crafting time (an equal share of one optimisation for an attack that crafts
    trials together)."""
    surrogate = networks.surrogate if networks is not None and plan.attack.needs != "nothing" else None
    start = time.perf_counter()
    if plan.attack.crafts_together:
        poisons = plan.attack.craft_group(setups[0].data.train, [s.threat for s in setups], surrogate,
                                          [s.seed for s in setups])
        return [(p, (time.perf_counter() - start) / len(setups)) for p in poisons]
    crafted = []
    for s in setups:
        crafted.append((plan.attack.craft(s.data.train, s.threat, surrogate, seed=s.seed, validation=s.data.val),
                        time.perf_counter() - start))
        start = time.perf_counter()
    return crafted


# Poisons that took this long to craft are kept for every trial, so that the scenario's other cells (another
# defense) and re-runs read them instead of crafting again; cheaper ones only for trial 0 and for defended cells.
KEEP_SECONDS = 5.0


def reuse_or_craft(plan: Plan, networks: Networks | None, setups: list[TrialSetup], cache_dir: str | Path
                   ) -> list[tuple[PoisonSet, float]]:
    """`craft`, reading the trials whose poisons the cache holds (crafting is deterministic: the same scenario
    without its defense and the same trial give the same poisons, so the cells of an attack × defense matrix craft
    each trial once) and keeping the new ones there. A reused trial reports the time its crafting took."""
    paths = [poisons_path(plan.scenario, cache_dir, s.trial) for s in setups]
    found = [kept_poisons(path) for path in paths]
    missing = [s for s, f in zip(setups, found, strict=True) if f is None]
    fresh = iter(craft(plan, networks, missing) if missing else [])
    crafted = []
    for setup, path, kept in zip(setups, paths, found, strict=True):
        if kept is not None:
            crafted.append(kept)
            continue
        poison, seconds = next(fresh)
        if len(poison) and (setup.trial == 0 or plan.scenario.defense != "none" or seconds >= KEEP_SECONDS):
            dataclasses.replace(poison, params=poison.params | {"craft_seconds": seconds}).save(path)
        crafted.append((poison, seconds))
    return crafted


def kept_poisons(path: Path) -> tuple[PoisonSet, float] | None:
    """The poisons kept at `path` with their crafting time; None when absent or unreadable (crafted again)."""
    if not path.exists():
        return None
    try:
        poison = PoisonSet.load(path)
    except PoisonlabError:
        return None
    seconds = poison.params.get("craft_seconds")
    if not isinstance(seconds, int | float):
        return None
    params = {k: v for k, v in poison.params.items() if k != "craft_seconds"}
    return dataclasses.replace(poison, params=params), float(seconds)


def finish(plan: Plan, networks: Networks | None, setup: TrialSetup, poison: PoisonSet, craft_seconds: float,
           together: int, cache_dir: str | None) -> TrialRow:
    """Train the victims, defend (when the scenario has a defense), measure; the trial's row."""
    start = time.perf_counter()
    victims, test, threat = setup.victims, setup.data.test, setup.threat
    control = control_victim(victims, setup.trial, cache_dir)
    victim = poisoned_victim(victims, setup.trial, poison, cache_dir) if len(poison) else control
    trained = time.perf_counter()
    inputs = attack_inputs(poison, test, threat.target_image if plan.targeted else None)
    undefended, on_control = (measure(m, victims.test_predictions(m), test, threat, inputs) for m in (victim, control))
    final, defense = undefended, None
    if plan.defense is not None:
        defended = defend_trial(plan, victims, threat, poison, victim, control, None if inputs is None else inputs.x)
        final = measure(defended.model, predict(defended.model, test.x), test, threat, inputs)
        defense = DefensePart(dataclasses.asdict(defended.counts), undefended.correct, undefended.attack_hits,
                              time.perf_counter() - trained)
    targeted = None if setup.target is None else targeted_part(
        networks, setup.data.train, test, threat, setup.target, poison, victim, control, setup.seed, together)
    data = setup.data
    return TrialRow(setup.trial, setup.seed, len(data.train), len(test), len(poison), final.correct, on_control.correct,
                    final.attack_hits, final.attack_inputs, on_control.attack_hits, final.others_correct,
                    on_control.others_correct, final.n_others, poison.perturbation(data.train), craft_seconds,
                    trained - start, craft_seconds + time.perf_counter() - start, test.digest(), targeted, defense)


def kept_poisons_path(scenario: Scenario, cache_dir: str | Path) -> Path:
    """Where a run keeps its scenario's first-trial poisons, beside the cached networks: the suite's figure
    reads them instead of crafting again, and anyone may train on them (`PoisonSet.load`)."""
    return poisons_path(scenario, cache_dir, 0)


def poisons_path(scenario: Scenario, cache_dir: str | Path, trial: int) -> Path:
    """Where trial `trial`'s poisons are kept: under the hash of the scenario without its defense (the same
    poisons for every defense)."""
    undefended = scenario.model_copy(update={"defense": "none", "defense_params": {}})
    return Path(cache_dir) / f"poisons-{undefended.hash}-trial{trial}.npz"
