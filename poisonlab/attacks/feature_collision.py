"""Feature Collision ("Poison Frogs", Shafahi et al. 2018): each poison's features collide with the target's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..data import Dataset
from ..errors import ConfigError
from ..models import Classifier
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import FeatureSpaceAttack
from .feature_space import frozen, open_stack, project


@dataclass(frozen=True)
class FeatureCollision(FeatureSpaceAttack):
    """argmin_x ||f(x) - f(t)||² + β ||x - b||² for every poison at once, by forward-backward splitting
    (Shafahi et al. 2018, Algorithm 1): a forward step on the feature term, the closed-form proximal step
    x = (x̂ + λβ b) / (1 + λβ), then projection into the eps box. `beta` is β0 of the paper, scaled by
    (feature dim / input dim)². `opacity` > 0 first blends the target into each base (the watermark for
    end-to-end training). Departures: the forward step is an Adam step on the feature loss normalised by
    ||f(t)||² (the paper's fixed-step gradient depends on the feature scale), and an ensemble averages the term."""

    name: ClassVar[str] = "feature-collision"
    summary: ClassVar[str] = "clean-label targeted: poisons collide with the target in feature space (Shafahi 2018)"

    steps: int = 200
    lr: float = 0.01
    beta: float = 0.25
    opacity: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.beta < 0 or not 0 <= self.opacity < 1:
            raise ConfigError(f"feature-collision needs steps >= 1, lr > 0, beta >= 0 and opacity in [0, 1); got "
                              f"steps={self.steps}, lr={self.lr}, beta={self.beta}, opacity={self.opacity}.")

    def craft_group(self, train: Dataset, threats: Sequence[ThreatModel],
                    surrogate: Classifier | list[Classifier] | None, seeds: Sequence[int]) -> list[PoisonSet]:
        stack = open_stack(self, train, threats, surrogate, seeds, lambda s: generator(s, self.name))
        models, bases, eps = stack.models, stack.bases, threats[0].eps
        start = torch.cat([project(o.bases + self.opacity * (o.target.mean(0, keepdim=True) - o.bases), o.bases, eps)
                           for o in stack.openings])
        with frozen(models):
            # each poison's own trial's target feature
            target_features = [stack.target_features(m)[0].repeat_interleave(stack.per, 0) for m in models]
            poisons = self.collide(models, bases, start, target_features, eps)
        return stack.poison_sets(self, poisons, threats)

    def collide(self, models: list[Classifier], bases: torch.Tensor, start: torch.Tensor,
                target_features: list[torch.Tensor], eps: float) -> torch.Tensor:
        """`target_features`: per model, the target feature of each poison's trial (a row per poison)."""
        beta = self.beta * (target_features[0].shape[1] / bases[0].numel()) ** 2
        scales = [target_feature.pow(2).sum(1) for target_feature in target_features]
        poisons = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([poisons], lr=self.lr)
        for _ in range(self.steps):
            loss = sum(((m.features(poisons) - target_feature).pow(2).sum(1) / scale).sum()
                       for m, target_feature, scale in zip(models, target_features, scales, strict=True)) / len(models)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # the proximal (backward) step of β||x - b||², then the eps box
                poisons.copy_(project((poisons + self.lr * beta * bases) / (1 + self.lr * beta), bases, eps))
        return poisons.detach()
