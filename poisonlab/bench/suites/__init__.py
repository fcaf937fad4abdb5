"""Named suites: YAML files beside this module, each a list of groups (a base scenario) × attacks (× defenses)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from ...data import DATASETS, load_dataset
from ...errors import ConfigError, DataError, unknown
from ..scenario import Scenario, scenario_from_dict


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    scenarios: list[Scenario]
    skipped: list[str]
    plot: dict | None = None
    matrix: bool = False
    toxic: bool = False


def suite_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml"))


def suite_spec(name: str) -> dict:
    if name not in suite_names():
        raise unknown("suite", name, suite_names())
    return yaml.safe_load(resources.files(__package__).joinpath(f"{name}.yaml").read_text())


def suite_description(name: str) -> str:
    return suite_spec(name)["description"]


def load_suite(name: str, data_root: str | None = None, trials: int | None = None,
               setups: str | None = None, device: str | None = None, protocol: str | None = None,
               pretrain_data_root: str | None = None) -> Suite:
    """The suite `name`, its optional groups skipped (with the reason) when their data is not installed;
    `setups` (a "Just How Toxic" trial file), `device` and `protocol` go to every scenario of a targeted suite
    (a protocol with its own entry under the suite's `protocols` also takes that entry's fields in the groups
    that pretrain: frozen and fine-tuned victims). Without `protocol`, the suite's own `protocol:` if it names
    one. `pretrain_data_root` is where the groups that pretrain on another data set (`pretrain_dataset`) find it."""
    spec = suite_spec(name)
    for flag, value in (("--setups", setups), ("--protocol", protocol)):
        if value is not None and not spec.get("toxic"):
            raise ConfigError(f"{flag} is for the targeted suites (toxic, toxic-cifar10); suite {name!r} has no "
                              "targeted attacks.")
    if device is not None and not spec.get("toxic") and not any("device" in g["base"] for g in spec["groups"]):
        raise ConfigError(f"--device picks the device of the suites that train on one (toxic, toxic-cifar10, "
                          f"backdoors-cifar10); suite {name!r} runs on the CPU.")
    protocol = protocol if protocol is not None else spec.get("protocol")
    pretraining = any("pretrain_dataset" in g["base"] for g in spec["groups"]) or \
        "pretrain_dataset" in spec.get("protocols", {}).get(protocol, {})
    if pretrain_data_root is not None and not pretraining:
        raise ConfigError(f"--pretrain-data-root is where a suite's pretraining data set lies; suite {name!r} "
                          f"pretrains on none (protocol {protocol}): leave it out.")
    scenarios, skipped = [], []
    reading = [g for g in spec["groups"] if DATASETS[g["base"]["dataset"]].reads_files]
    if data_root is not None and not reading:
        raise ConfigError(f"suite {name!r} runs on built-in data only and reads no files: leave --data-root out.")
    for group in spec["groups"]:
        base = dict(group["base"], data_root=data_root if group in reading else None)
        if trials is not None:
            base["trials"] = trials
        if setups is not None:
            base["setups"] = setups
        if device is not None:
            base["device"] = device
        if protocol is not None:
            base["protocol"] = protocol
            if base.get("setting", "scratch") != "scratch":
                base.update(spec.get("protocols", {}).get(protocol, {}))
        if base.get("pretrain_dataset") is not None and pretrain_data_root is not None:
            base["pretrain_data_root"] = pretrain_data_root
        if group.get("optional") and (reason := unavailable(base["dataset"], data_root)):
            skipped.append(f"{base['dataset']}: {reason}")
            continue
        for entry in in_group(spec["attacks"], group, "attacks", "name"):
            for budget in entry.get("budgets", [None]):
                for defense in in_group(spec.get("defenses", [{"defense": "none"}]), group, "defenses", "defense"):
                    scenarios.append(group_scenario(base, group, entry, name, budget, defense))
    return Suite(name, spec["description"], scenarios, skipped, spec.get("plot"), "defenses" in spec,
                 bool(spec.get("toxic")))


def in_group(entries: list[dict], group: dict, key: str, name: str) -> list[dict]:
    """The suite's attack (or defense) entries a group runs: those its `attacks` (`defenses`) list names, or all."""
    chosen = group.get(key)
    unknown = set(chosen or ()) - {e[name] for e in entries}
    if unknown:
        raise ConfigError(f"a suite group lists {key} {sorted(unknown)} that the suite does not define.")
    return [e for e in entries if chosen is None or e[name] in chosen]


def group_scenario(base: dict, group: dict, entry: dict, suite: str, budget=None, defense: dict | None = None
                   ) -> Scenario:
    """One scenario: the group's base, the attack entry, (for entries with `budgets`) one of its budgets, and a
    defense entry (its parameters from the entry, then the group's `defense_params` for that defense)."""
    entry = {k: v for k, v in entry.items() if k != "budgets"}
    defense = dict(defense or {"defense": "none"})
    if defense["defense"] != "none":
        defense["defense_params"] = {**group.get("defense_params", {}).get(defense["defense"], {}),
                                     **defense.get("defense_params", {})}
    params = {**group.get(entry["attack"], {}), **entry.pop("attack_params", {})}
    label = f"{base['dataset']}: {entry.pop('name')}"
    if budget is not None:
        entry["budget"], label = budget, f"{label} ({budget})"
    if defense["defense"] != "none":
        label = f"{label} + {defense['defense']}"
    return scenario_from_dict({**base, **entry, **defense, "name": label, "attack_params": params}, f"suite {suite}")


def unavailable(dataset: str, data_root: str | None) -> str | None:
    try:
        load_dataset(dataset, root=data_root, download=False)
    except DataError as exc:
        return str(exc)
    return None
