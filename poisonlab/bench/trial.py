"""One trial: craft -> apply -> train the victim -> measure. Pure computation; no files, no printing."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from functools import lru_cache

import torch

from ..attacks import check_compatible, make_attack
from ..data import Splits, load_dataset
from ..defenses import make_defense
from ..device import resolve_device
from ..errors import ConfigError
from ..metrics import attack_success_rate, clean_accuracy
from ..models import Classifier, ModelCache, build_model, predict, train
from ..seeding import derive_seed
from ..threat import ThreatModel
from .defend import defend
from .scenario import Scenario
from .setups import load_setups, usable_setups
from .targeted import run_targeted_trials


@lru_cache(maxsize=4)
def cached_splits(dataset: str, data_root: str | None) -> Splits:
    """Each process loads a data set once (the runner reuses it across trials)."""
    return load_dataset(dataset, root=data_root)


@lru_cache(maxsize=4)
def targeted_splits(dataset: str, data_root: str | None, classes: tuple[int, ...] | None, train_size: int | None,
                    test_size: int | None, seed: int, val_size: int | None, first: bool) -> Splits:
    """A targeted scenario's subset, drawn once: all its trials share it, and the same objects let the frozen
    victims reuse the pretrained network's memoised features of it (bench.targeted.split_features)."""
    return cached_splits(dataset, data_root).subset(classes, train_size, test_size, seed=seed, val_size=val_size,
                                                    first=first)


def trial_seed(scenario: Scenario, trial: int) -> int:
    """Trial i of every scenario with the same seed gets the same split and initialisation (common random
    numbers), so a clean baseline and an attack differ only by the poisons."""
    return derive_seed(scenario.seed, "trial", trial)


def prepare(scenario: Scenario, trial: int):
    """The trial's data, threat model and attack, validated (raises ConfigError/DataError before any training).

    A targeted attack's trials share one training set (drawn with the scenario's seed), as in the benchmark
    protocol: the network is pretrained once and each trial draws its own target and bases."""
    seed = trial_seed(scenario, trial)
    attack = make_attack(scenario.attack, **scenario.attack_params)
    targeted = getattr(attack, "targeted", False)
    if targeted and "augment" in {f.name for f in dataclasses.fields(attack)} and \
            "augment" not in scenario.attack_params:  # crafting augments as the victim trains, unless told
        attack = dataclasses.replace(attack, augment=scenario.recipe.augment != "none")
    device = resolve_device(scenario.device)  # a GPU asked for and absent fails here, before data or training
    if targeted:
        data = targeted_splits(scenario.dataset, scenario.data_root,
                               None if scenario.classes is None else tuple(scenario.classes), scenario.train_size,
                               scenario.test_size, scenario.seed, scenario.val_size, scenario.sampling == "first")
    else:
        data = cached_splits(scenario.dataset, scenario.data_root).subset(
            scenario.classes, scenario.train_size, scenario.test_size, seed=seed, val_size=scenario.val_size,
            first=scenario.sampling == "first")
    threat = ThreatModel.for_data(data.train, scenario.budget, eps=scenario.eps, clean_label=scenario.clean_label,
                                  target_class=scenario.target_class, source_class=scenario.source_class,
                                  goal=scenario.goal, knowledge=scenario.knowledge, setting=scenario.setting)
    check_compatible(attack, threat, validation=data.val, surrogate_from_trial=targeted)
    for name in (scenario.model, *(scenario.surrogates or ())):  # fails fast on an unknown model
        build_model(name, data.train.shape, data.train.num_classes)
    defense = None if scenario.defense == "none" else make_defense(scenario.defense, **scenario.defense_params)
    if targeted and defense is not None:
        raise ConfigError(f"defenses against targeted attacks ({scenario.attack}) are not in the trial loop yet; "
                          "run the attack without --defense.")
    if targeted and scenario.setups is not None:
        check_setups(scenario, data)
    if not targeted and device.type != "cpu":
        raise ConfigError(f"--device {scenario.device} runs the targeted clean-label attacks (the toxic suites); "
                          f"{scenario.attack} runs on the CPU: leave --device out.")
    if not targeted and (scenario.setups or scenario.setting != "scratch"):
        raise ConfigError(f"--setups and the frozen / finetune settings are for targeted clean-label attacks "
                          f"(feature-collision, convex-polytope, bullseye-polytope, ...); {scenario.attack} trains "
                          "its victim from scratch.")
    return seed, data, threat, attack, defense


def check_setups(scenario: Scenario, data: Splits) -> None:
    usable = len(usable_setups(load_setups(scenario.setups), data.test))
    if scenario.trials > usable:
        raise ConfigError(f"{scenario.setups} has {usable} setups whose target is in the loaded test split; ask for "
                          f"at most {usable} trials (--trials {usable}).")


VICTIM_FIELDS = {"dataset", "classes", "train_size", "test_size", "val_size", "model", "recipe", "seed"}


def clean_victim(scenario: Scenario, trial: int, data: Splits, cache_dir: str | None) -> Classifier:
    """The victim trained on the clean training set of this trial; cached, so every attack scenario of a suite
    that shares the data, model and recipe trains it once."""
    seed = trial_seed(scenario, trial)

    def build() -> Classifier:
        return build_model(scenario.model, data.train.shape, data.train.num_classes, seed=seed)

    def fit(model: Classifier) -> None:
        train(model, data.train, scenario.recipe, seed=seed)

    if cache_dir is None:
        model = build()
        fit(model)
        return model
    config = {"trial": trial, **scenario.model_dump(mode="json", include=VICTIM_FIELDS)}
    if scenario.sampling != "random":
        config["sampling"] = scenario.sampling
    return ModelCache(cache_dir).get(config, build, fit)


def poisoned_victim(scenario: Scenario, trial: int, poisoned, build, cache_dir: str | None) -> Classifier:
    """The victim trained on the poisoned set; with a defense in the loop it is cached under the undefended
    scenario's hash, so the cells of an attack × defense matrix share it (crafting is deterministic)."""
    def fit(model: Classifier) -> None:
        train(model, poisoned, scenario.recipe, seed=trial_seed(scenario, trial))

    if cache_dir is None or scenario.defense == "none":
        model = build()
        fit(model)
        return model
    undefended = scenario.model_copy(update={"defense": "none", "defense_params": {}})
    return ModelCache(cache_dir).get({"trial": trial, "poisoned_scenario": undefended.hash}, build, fit)


def run_trials(scenario: Scenario, trials: Sequence[int], cache_dir: str | None = None) -> list[dict]:
    """Run trials of `scenario`, one result each. A targeted feature-space attack crafts them together (one
    optimisation for all, each trial's poisons those it gets alone); the others run one by one."""
    if not getattr(make_attack(scenario.attack, **scenario.attack_params), "targeted", False):
        return [run_trial(scenario, trial, cache_dir) for trial in trials]
    _, data, threat, attack, _ = prepare(scenario, trials[0])
    seeds = [trial_seed(scenario, trial) for trial in trials]
    return run_targeted_trials(scenario, trials, seeds, data, threat, attack, cache_dir)


def run_trial(scenario: Scenario, trial: int, cache_dir: str | None = None) -> dict:
    """Run trial `trial` of `scenario` and return its counts and timings; clean victims are cached in `cache_dir`."""
    seed, data, threat, attack, defense = prepare(scenario, trial)
    if getattr(attack, "targeted", False):
        return run_targeted_trials(scenario, [trial], [seed], data, threat, attack, cache_dir)[0]
    start = time.perf_counter()
    poison = attack.craft(data.train, threat, seed=seed, validation=data.val)
    crafted = time.perf_counter()
    clean = clean_victim(scenario, trial, data, cache_dir)

    def build() -> Classifier:
        return build_model(scenario.model, data.train.shape, data.train.num_classes, seed=seed)

    poisoned = poison.apply(data.train)
    model = poisoned_victim(scenario, trial, poisoned, build, cache_dir) if len(poison) else clean
    trained = time.perf_counter()
    defense_row = {}
    if defense is not None:
        undefended = model
        model, defense_row = defend(defense, build, data.train, poison, undefended, clean, scenario.recipe, seed,
                                    threat.budget, data.test)
        undefended_success = attack_success_rate(undefended, data.test, poison)
        defense_row |= {"undefended_correct": clean_accuracy(undefended, data.test).successes,
                        "undefended_asr_hits": None if undefended_success is None else undefended_success.successes,
                        "defense_seconds": time.perf_counter() - trained}
    accuracy = clean_accuracy(model, data.test)
    success = attack_success_rate(model, data.test, poison)
    clean_success = attack_success_rate(clean, data.test, poison)  # the rate without poisoning, for reference
    others = torch.ones(len(data.test), dtype=torch.bool) if threat.source_class is None \
        else data.test.y != threat.source_class  # the classes a class-targeted attack should leave alone
    return {
        "seed": seed, "n_train": len(data.train), "n_test": len(data.test), "n_poisons": len(poison),
        "correct": accuracy.successes, "clean_victim_correct": clean_accuracy(clean, data.test).successes,
        "asr_hits": None if success is None else success.successes,
        "asr_eligible": None if success is None else success.trials,
        "clean_victim_asr_hits": None if clean_success is None else clean_success.successes,
        "others_correct": int((predict(model, data.test.x[others]) == data.test.y[others]).sum()),
        "clean_victim_others_correct": int((predict(clean, data.test.x[others]) == data.test.y[others]).sum()),
        "n_others": int(others.sum()),
        "craft_seconds": crafted - start, "train_seconds": trained - crafted,
        "seconds": time.perf_counter() - start, **defense_row,
    }
