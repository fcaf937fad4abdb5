"""A targeted trial's target (the protocol of "Just How Toxic is Data Poisoning?", Schwarzschild et al. 2021):
a test image, the class the attacker wants for it and the bases whose images the poisons replace, from the
benchmark's setups file or drawn with the trial's seed alone, so that every attack of a trial (and the control)
meets the same target with the same bases, as JHT's setups fix them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..attacks.base import choose_bases
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
    wants it classified as; `bases`: positions in the training split (from a setups file, or drawn with the
    trial's seed); `setup`: the setups file's entry, `topped_up`: bases added where the file's are absent,
    `setups_skipped`: entries whose target is not in the loaded data."""

    position: int
    target_class: int
    bases: torch.Tensor
    setup: int | None = None
    topped_up: int = 0
    setups_skipped: int = 0


def choose_target(scenario: Scenario, trial: int, data: Splits, networks: Networks, budget: int, seed: int) -> Target:
    """From the setups file (the trial-th entry whose target is in the data), or drawn with the trial's seed:
    a test image the pretrained network classifies correctly, another class, and `budget` training images of
    that class as the bases. Nothing here depends on the attack."""
    g = generator(seed, "target")
    if scenario.setups is not None:
        return target_from_setups(scenario.setups, trial, data, budget, g)
    correct = torch.nonzero(networks.reference_predictions() == data.test.y).squeeze(1)
    position = int(correct[torch.randint(len(correct), (1,), generator=g)])
    shift = 1 + int(torch.randint(data.test.num_classes - 1, (1,), generator=g))
    target_class = (int(data.test.y[position]) + shift) % data.test.num_classes
    candidates = torch.nonzero(data.train.y == target_class).squeeze(1)
    bases = choose_bases(candidates, budget, generator(seed, "bases"),
                         f"training images of adversarial class {target_class}")
    return Target(position, target_class, bases)


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
    """The scenario's threat model with the trial's target image, its official index and class, the attacker's
    class and the bases."""
    return dataclasses.replace(threat, target_class=target.target_class,
                               target_image=data.test.x[target.position:target.position + 1],
                               target_image_class=int(data.test.y[target.position]),
                               target_image_index=int(data.test.index[target.position]), base_indices=target.bases)
