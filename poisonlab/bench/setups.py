"""Trial setups of "Just How Toxic is Data Poisoning?" (Schwarzschild et al. 2021): target and bases per trial,
as official dataset indices, mapped onto the data actually loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..data import Dataset
from ..errors import ConfigError, DataError, read_file

KEYS = ("target class", "target index", "base class", "base indices")


@dataclass(frozen=True)
class Setup:
    """One trial of a setups file: a target test image (its official index and its own class) and the bases
    (official training indices) of `base_class`, the class the attacker wants the target classified as (the
    file's "target class" is the target image's own class)."""

    target_image_class: int
    target_image_index: int
    base_class: int
    base_indices: tuple[int, ...]


@lru_cache(maxsize=8)
def load_setups(path: str) -> tuple[Setup, ...]:
    """Read a setups JSON file: a list of {"target class", "target index", "base class", "base indices"}."""
    try:
        entries = json.loads(read_file(path, "the setups file"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON ({exc}); expected the benchmark's setups as a JSON list.") from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path} must hold a non-empty JSON list of trial setups.")
    setups = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(KEYS) - set(entry):
            missing = ", ".join(repr(k) for k in KEYS if not isinstance(entry, dict) or k not in entry)
            raise ConfigError(f"{path}: setup {i} must be an object with keys {', '.join(map(repr, KEYS))}; "
                              f"missing {missing}.")
        for key in KEYS[:3]:
            if not is_index(entry[key]):
                raise ConfigError(f"{path}: setup {i}: {key!r} must be a non-negative integer; got {entry[key]!r}.")
        bases = entry["base indices"]
        if not isinstance(bases, list) or not bases or not all(is_index(b) for b in bases):
            raise ConfigError(f"{path}: setup {i}: 'base indices' must be a non-empty list of non-negative integers "
                              f"(official training indices); got {bases!r}.")
        if entry["target class"] == entry["base class"]:
            raise ConfigError(f"{path}: setup {i} has target class = base class = {entry['base class']}.")
        setups.append(Setup(entry["target class"], entry["target index"], entry["base class"],
                            tuple(dict.fromkeys(entry["base indices"]))))  # upstream repeats a base in two trials
    return tuple(setups)


def is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def positions(index: torch.Tensor) -> dict[int, int]:
    """Official index -> position in the loaded split."""
    return {int(v): i for i, v in enumerate(index.tolist())}


def usable_setups(setups: tuple[Setup, ...], test: Dataset) -> list[tuple[int, Setup]]:
    """(file position, setup) of every setup whose target image is in the loaded test split, checked against
    its label."""
    where = positions(test.index)
    usable = []
    for i, setup in enumerate(setups):
        if setup.target_image_index in where:
            label = int(test.y[where[setup.target_image_index]])
            if label != setup.target_image_class:
                raise DataError(f"setup {i}: test image {setup.target_image_index} has label {label} here but "
                                f"{setup.target_image_class} in the setups file; the data and the file disagree.")
            usable.append((i, setup))
    return usable


def map_bases(setup: Setup, train: Dataset, budget: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """The setup's bases as positions in the loaded training split (the first `budget` present), topped up
    with other images of the base class drawn with `g`; returns them and how many were topped up."""
    where = positions(train.index)
    present = [where[i] for i in setup.base_indices if i in where][:budget]
    wrong = [p for p in present if int(train.y[p]) != setup.base_class]
    if wrong:
        raise DataError(f"training image {int(train.index[wrong[0]])} is labelled {int(train.y[wrong[0]])} here, "
                        f"not the setup's base class {setup.base_class}; the data and the file disagree.")
    missing = budget - len(present)
    if missing:
        pool = torch.nonzero(train.y == setup.base_class).squeeze(1)
        pool = pool[~torch.isin(pool, torch.tensor(present, dtype=torch.long))]
        if missing > len(pool):
            raise ConfigError(f"budget of {budget} poisons exceeds the {len(present) + len(pool)} training images "
                              f"of base class {setup.base_class}; lower the budget.")
        present += pool[torch.randperm(len(pool), generator=g)[:missing]].tolist()
    return torch.tensor(sorted(present), dtype=torch.long), missing
