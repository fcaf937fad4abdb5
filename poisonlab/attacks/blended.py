"""Blended-trigger backdoor (Chen et al. 2017): a full-image pattern mixed in with opacity alpha."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..data import Dataset, check_images
from ..errors import ConfigError
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel, Trigger
from .base import Attack, backdoor_fields, check_choice, dirty_label_backdoor


@dataclass(frozen=True)
class Blended(Attack):
    """x' = (1 - alpha) x + alpha * pattern, the pattern being seeded uniform noise or a given image."""

    name: ClassVar[str] = "blended"
    summary: ClassVar[str] = "full-image blended trigger (seeded noise or your image) with opacity alpha"
    pursues: ClassVar[str] = "integrity"

    alpha: float = 0.2
    pattern: str = "noise"
    image: torch.Tensor | None = field(default=None, repr=False)
    mode: str = "all-to-one"
    pattern_seed: int = 0

    def threat_fields(self) -> frozenset[str]:
        return backdoor_fields(self.mode)

    def __post_init__(self) -> None:
        check_choice("pattern", self.pattern, ("noise", "image"))
        check_choice("mode", self.mode, ("all-to-one", "all-to-all"))
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"alpha={self.alpha} must lie in (0, 1] (the trigger's opacity).")
        if self.pattern == "image":
            if self.image is None:
                raise ConfigError("pattern='image' needs image=<C×H×W tensor in [0, 1]>.")
            check_images(self.image[None], "blended trigger image")

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        self.trigger(shape)

    def trigger(self, shape: tuple[int, int, int]) -> Trigger:
        if self.pattern == "noise":
            pattern = torch.rand(shape, generator=generator(self.pattern_seed, "blended-pattern"))
        elif self.image.shape[-2:] != shape[-2:] or self.image.shape[0] not in (1, shape[0]):
            raise ConfigError(f"the blended image is {tuple(self.image.shape)}; the data's images are {shape}.")
        else:
            pattern = self.image.expand(shape).clone()
        return Trigger(torch.full((1, *shape[1:]), float(self.alpha)), pattern)

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        params = {"alpha": self.alpha, "pattern": self.pattern, "mode": self.mode, "pattern_seed": self.pattern_seed}
        return dirty_label_backdoor(self.name, train, threat, self.trigger(train.shape), self.mode,
                                    generator(seed, self.name), params)
