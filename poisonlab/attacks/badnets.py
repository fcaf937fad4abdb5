"""BadNets (Gu, Dolan-Gavitt, Garg 2017): a patch trigger stamped on poisons whose labels are changed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from ..data import Dataset
from ..errors import ConfigError
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel, Trigger
from .base import Attack, backdoor_fields, check_choice, dirty_label_backdoor

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")
PATTERNS = ("white", "checkerboard", "random")


@dataclass(frozen=True)
class BadNets(Attack):
    """Stamp a `patch_size` square (white, checkerboard or a fixed random pattern) `margin` pixels from a corner.

    mode="all-to-one" relabels the poisons as the target class; "all-to-all" relabels class i as i+1.
    """

    name: ClassVar[str] = "badnets"
    summary: ClassVar[str] = "patch-trigger backdoor with flipped labels (all-to-one or all-to-all)"
    pursues: ClassVar[str] = "integrity"

    patch_size: int = 3
    position: str = "bottom-right"
    pattern: str = "white"
    margin: int = 1
    mode: str = "all-to-one"
    pattern_seed: int = 0

    def threat_fields(self) -> frozenset[str]:
        return backdoor_fields(self.mode)

    def __post_init__(self) -> None:
        check_choice("position", self.position, POSITIONS)
        check_choice("pattern", self.pattern, PATTERNS)
        check_choice("mode", self.mode, ("all-to-one", "all-to-all"))
        if self.patch_size < 1 or self.margin < 0:
            raise ConfigError(f"patch_size must be >= 1 and margin >= 0; got {self.patch_size}, {self.margin}.")

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        self.trigger(shape)

    def trigger(self, shape: tuple[int, int, int]) -> Trigger:
        return patch_trigger(shape, self.patch(shape[0]), self.margin, self.position, self.name)

    def patch(self, channels: int) -> torch.Tensor:
        s = self.patch_size
        if self.pattern == "white":
            return torch.ones(channels, s, s)
        if self.pattern == "checkerboard":
            return ((torch.arange(s)[:, None] + torch.arange(s)[None, :]) % 2 == 0).float().expand(channels, s, s)
        return (torch.rand(channels, s, s, generator=generator(self.pattern_seed, "badnets-pattern")) > 0.5).float()

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        return dirty_label_backdoor(self.name, train, threat, self.trigger(train.shape), self.mode,
                                    generator(seed, self.name), asdict(self))


def patch_trigger(shape: tuple[int, int, int], patch: torch.Tensor, margin: int, position: str, attack: str,
                  placement: str = "fixed", placement_seed: int = 0) -> Trigger:
    """A C×s×s `patch` `margin` pixels in from `position` (a corner or the centre) of C×H×W images."""
    c, h, w = shape
    s, m = patch.shape[-1], margin
    if s + m > min(h, w):
        raise ConfigError(f"{attack}: a patch_size={s} patch margin={m} pixels from the edge does not fit "
                          f"{h}×{w} images; use patch_size + margin <= {min(h, w)}.")
    top = {"top": m, "bottom": h - m - s, "center": (h - s) // 2}[position.split("-")[0]]
    left = {"left": m, "right": w - m - s, "center": (w - s) // 2}[position.split("-")[-1]]
    mask, pattern = torch.zeros(1, h, w), torch.zeros(c, h, w)
    mask[:, top:top + s, left:left + s] = 1.0
    pattern[:, top:top + s, left:left + s] = patch
    return Trigger(mask, pattern, placement, placement_seed)
