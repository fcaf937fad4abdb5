"""Convex Polytope (Zhu et al. 2019): the target's features inside the convex hull of the poisons' features."""

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
from .base import FeatureSpaceAttack, check_choice
from .feature_space import adam_in_box, frozen, layer_features, open_stack


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of `v` onto the probability simplex (Duchi et al. 2008), batched."""
    u, _ = v.sort(dim=-1, descending=True)
    cumulative = u.cumsum(-1) - 1
    ks = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - cumulative / ks > 0).sum(-1, keepdim=True)
    theta = cumulative.gather(-1, rho - 1) / rho
    return (v - theta).clamp_min(0)


def combine(c: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Per trial, the convex combination Σ_j c_j f_j: (trials, k) × (trials, k, d) → (trials, d). Written as a
    product and a sum, not a batched matmul, so a trial's numbers do not depend on how many trials are stacked."""
    return (c[:, :, None] * f).sum(1)


@dataclass(frozen=True)
class ConvexPolytope(FeatureSpaceAttack):
    """min over poisons x_j (eps box) and coefficients c ≥ 0, Σ c = 1 (one set per surrogate) of
    Σ_models Σ_layers ½ ||f(t) - Σ_j c_j f(x_j)||² / ||f(t)||² (Zhu et al. 2019, eq. 2), alternating an Adam
    step on the poisons with `coefficient_steps` projected-gradient steps on c (step 1/L, L the largest
    eigenvalue of the poisons' feature Gram matrix). Ensembles of surrogates, `layers="all"` (every
    block's output) and `dropout` follow the paper's transferable variant: dropout at that rate on the poisons'
    features while crafting (Zhu et al.'s code turns their surrogates' dropout on, at 0.2-0.3; our networks have
    none, so the features are dropped), a fresh mask per step from each trial's seed. JHT crafts without it (0)."""

    name: ClassVar[str] = "convex-polytope"
    summary: ClassVar[str] = "clean-label targeted: target inside the poisons' feature polytope (Zhu et al. 2019)"

    steps: int = 200
    lr: float = 0.01
    coefficient_steps: int = 5
    layers: str = "last"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_choice("layers", self.layers, ("last", "all"))
        if self.steps < 1 or self.lr <= 0 or self.coefficient_steps < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"convex-polytope needs steps >= 1, lr > 0, coefficient_steps >= 1 and dropout in "
                              f"[0, 1); got {self.steps}, {self.lr}, {self.coefficient_steps}, {self.dropout}.")

    def craft_group(self, train: Dataset, threats: Sequence[ThreatModel],
                    surrogate: Classifier | list[Classifier] | None, seeds: Sequence[int]) -> list[PoisonSet]:
        stack = open_stack(self, train, threats, surrogate, seeds, lambda s: generator(s, self.name))
        models, bases, trials = stack.models, stack.bases, len(threats)
        # per surrogate, one coefficient vector per trial: (models, trials, poisons per trial)
        coefficients = torch.full((len(models), trials, stack.per), 1.0 / stack.per, device=bases.device)
        masks = [generator(s, "dropout") for s in seeds]
        with frozen(models):
            target_features = [stack.target_features(m, self.layers) for m in models]

            def features(poisons: torch.Tensor, drop: bool = False) -> list[list[torch.Tensor]]:
                return [[stack.grouped(dropped(f, self.dropout, masks) if drop else f)
                         for f in layer_features(m, poisons, self.layers)] for m in models]

            def loss(poisons: torch.Tensor) -> torch.Tensor:
                return sum((0.5 * (combine(c, f) - target_feature).pow(2).sum(1) / target_feature.pow(2).sum(1)).sum()
                           for c, fs, targets in zip(coefficients, features(poisons, bool(self.dropout)),
                                                     target_features, strict=True)
                           for f, target_feature in zip(fs, targets, strict=True)) / len(models)

            def update_coefficients(poisons: torch.Tensor) -> None:
                for c, fs, targets in zip(coefficients, features(poisons), target_features, strict=True):
                    # trials × k × (all layers), each layer scaled by its target feature's norm
                    phi = torch.cat([f / t.norm(dim=1)[:, None, None] for f, t in zip(fs, targets, strict=True)], 2)
                    target_feature = torch.cat([a / a.norm(dim=1, keepdim=True) for a in targets], 1)
                    gram = (phi[:, :, None] * phi[:, None]).sum(-1)
                    # one trial at a time: a batched SVD rounds differently from a single one
                    step = 1.0 / torch.stack([torch.linalg.matrix_norm(g, ord=2) for g in gram]).clamp_min(1e-12)
                    for _ in range(self.coefficient_steps):
                        residual = combine(c, phi) - target_feature
                        c.copy_(project_simplex(c - step[:, None] * (residual[:, None] * phi).sum(-1)))

            poisons = adam_in_box(bases, bases, threats[0].eps, loss, self.steps, self.lr, update_coefficients)
        return stack.poison_sets(self, poisons, threats,
                                 [{"coefficients": coefficients[:, i].tolist()} for i in range(trials)])


def dropped(features: torch.Tensor, rate: float, generators: list[torch.Generator]) -> torch.Tensor:
    """Inverted dropout on stacked trials' features (rows trial-major): each trial's mask from its own generator,
    so a trial's poisons do not depend on which trials are crafted with it."""
    rows = features.reshape(len(generators), -1, *features.shape[1:])
    keep = torch.stack([torch.rand(rows.shape[1:], generator=g) >= rate for g in generators]).to(features.device)
    return (rows * keep / (1 - rate)).reshape(features.shape)
