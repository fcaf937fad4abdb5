"""A targeted trial's target (the protocol of "Just How Toxic is Data Poisoning?", Schwarzschild et al. 2021):
a test image and the class the attacker wants for it, from the benchmark's setups file or drawn with the
trial's seed, and the bases the setups file names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..data import Splits
from ..errors import ConfigError
from ..seeding import generator
from ..threat import ThreatModel
from .scenario import Scenario
from .setups import load_setups, map_bases, usable_setups
from .shared import Networks


@dataclass(frozen=True)
class Target:
    """`position`: the target image's position in the loaded test split; `target_class`: the class the attacker
    wants it classified as; `bases`: positions in the training split (from a setups file), or None (the
    attack draws them); `setup`: the setups file's entry, `topped_up`: bases added where the file's are absent,
    `setups_skipped`: entries whose target is not in the loaded data."""

    position: int
    target_class: int
    bases: torch.Tensor | None = None
    setup: int | None = None
    topped_up: int = 0
    setups_skipped: int = 0


def choose_target(scenario: Scenario, trial: int, data: Splits, networks: Networks, budget: int, seed: int) -> Target:
    """From the setups file (the trial-th entry whose target is in the data), or drawn with the trial's seed:
    a test image the pretrained network classifies correctly and another class."""
    g = generator(seed, "target")
    if scenario.setups is not None:
        return target_from_setups(scenario.setups, trial, data, budget, g)
    correct = torch.nonzero(networks.reference_predictions() == data.test.y).squeeze(1)
    position = int(correct[torch.randint(len(correct), (1,), generator=g)])
    shift = 1 + int(torch.randint(data.test.num_classes - 1, (1,), generator=g))
    return Target(position, (int(data.test.y[position]) + shift) % data.test.num_classes)


def target_from_setups(path: str, trial: int, data: Splits, budget: int, g: torch.Generator) -> Target:
    setups = load_setups(path)
    usable = usable_setups(setups, data.test)
    if trial >= len(usable):
        raise ConfigError(f"{path} has {len(usable)} setups whose target is in the loaded test split; ask for at "
                          f"most {len(usable)} trials.")
    index, setup = usable[trial]
    position = int(torch.nonzero(data.test.index == setup.target_image_index)[0, 0])
    bases, topped_up = map_bases(setup, data.train, budget, g)
    return Target(position, setup.base_class, bases, index, topped_up, len(setups) - len(usable))


def targeted_threat(threat: ThreatModel, target: Target, data: Splits) -> ThreatModel:
    """The scenario's threat model with the trial's target image, its official index, the attacker's class
    and the bases."""
    return dataclasses.replace(threat, target_class=target.target_class,
                               target_image=data.test.x[target.position:target.position + 1],
                               target_image_index=int(data.test.index[target.position]), base_indices=target.bases)
