"""Feature Collision ("Poison Frogs", Shafahi et al. 2018): each poison's features collide with the target's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..data import Dataset
from ..errors import ConfigError
from ..models import Classifier
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import FeatureSpaceAttack, check_choice
from .feature_space import adam_in_box, frozen, open_stack, project

METHODS = ("forward-backward", "linf", "adam")
# Shafahi et al. set beta = beta0 * 2048^2 / dim(b)^2, 2048 being their Inception-v3's feature width; for a
# 32x32 colour image that is 0.11, the beta JHT's l2 variant uses on [0, 1] pixels.
PAPER_WIDTH = 2048


@dataclass(frozen=True)
class FeatureCollision(FeatureSpaceAttack):
    """Every poison on its own: argmin_x Σ_models ||f(x) - f(t)||² (+ β ||x - b||²), from the base blended with the
    target at `opacity` (the watermark), in the eps box of the base. `method`:

    - "linf" (the default): JHT's `craft_poisons_fc.py`: plain gradient steps of size λ on the feature term, the
      step cut by 0.2 whenever the objective would rise, a poison stopping once an accepted step moves it by less
      than 1e-5 of its norm; clamped to the eps box (no β).
    - "forward-backward" (Shafahi et al. 2018, Algorithm 1): a plain gradient step of size λ on the feature term,
      the proximal step x = (x̂ + λβ b) / (1 + λβ) of β||x - b||², β = beta · 2048² / dim(b)² (0.11 on 32x32 colour
      images, 256 on 8x8 digits, where it holds the poisons at their bases), the same backtracking and stop.
      Departure: the iterate is also projected into the eps box (the paper has no box).
    - "adam": Adam at `lr` on the feature term divided by ||f(t)||², projected into the box (no β); poisonlab's
      quick variant.

    Defaults as JHT's script: 120 iterations, step 0.001 (Adam: lr 0.01), opacity 0.3 (for every setting; the
    paper watermarks for end-to-end training). An ensemble sums the feature term over its models, as JHT does."""

    name: ClassVar[str] = "feature-collision"
    summary: ClassVar[str] = "clean-label targeted: poisons collide with the target in feature space (Shafahi 2018)"

    method: str = "linf"
    steps: int = 120
    lr: float | None = None  # the step size: 0.001 for the plain steps, 0.01 for Adam
    beta: float = 0.25
    opacity: float = 0.3

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        if self.lr is None:
            object.__setattr__(self, "lr", 0.01 if self.method == "adam" else 0.001)
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

    def effective_beta(self, bases: torch.Tensor) -> float:
        """β of the forward-backward objective for images of this size (0 for the methods without it)."""
        return self.beta * (PAPER_WIDTH / bases[0].numel()) ** 2 if self.method == "forward-backward" else 0.0

    def collide(self, models: list[Classifier], bases: torch.Tensor, start: torch.Tensor,
                target_features: list[torch.Tensor], eps: float) -> torch.Tensor:
        """`target_features`: per model, the target feature of each poison's trial (a row per poison)."""
        if self.method == "adam":
            scales = [t.pow(2).sum(1) for t in target_features]

            def normalised(poisons: torch.Tensor) -> torch.Tensor:
                return sum(((m.features(poisons) - t).pow(2).sum(1) / s).sum()
                           for m, t, s in zip(models, target_features, scales, strict=True)) / len(models)
            return adam_in_box(start, bases, eps, normalised, self.steps, self.lr)
        beta = self.effective_beta(bases)

        def objective(poisons: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # one value per poison
            collision = sum((m.features(poisons) - t[rows]).pow(2).sum(1)
                            for m, t in zip(models, target_features, strict=True))
            return collision + beta * (poisons - bases[rows]).flatten(1).pow(2).sum(1)

        def step(x: torch.Tensor, grad: torch.Tensor, size: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            size = size.view(-1, *[1] * (x.ndim - 1))
            moved = x - size * grad
            if beta:  # the proximal step of beta ||x - b||^2
                moved = (moved + size * beta * bases[rows]) / (1 + size * beta)
            return project(moved, bases[rows], eps)

        return backtracking_descent(objective, step, start, self.steps, self.lr)


def backtracking_descent(objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                         start: torch.Tensor, iterations: int, size: float, shrink: float = 0.2,
                         tolerance: float = 1e-5) -> torch.Tensor:
    """Minimise independent per-row objectives (`objective(x, rows)`: one value per row of x, which holds the
    rows `rows` of the problem), each row with its own step size: propose `step(x, grad, size, rows)` for the
    rows still moving, accept where the row's objective does not rise, else cut that row's step by `shrink` and
    keep it; a row stops once an accepted move is below `tolerance` of its norm (JHT's rule). One forward and
    backward pass per iteration, over the rows still moving."""

    def value_and_grad(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            values = objective(x, rows)
            return values.detach(), torch.autograd.grad(values.sum(), x)[0]

    n = len(start)
    x = start.detach().clone()
    values, grads = value_and_grad(x, torch.arange(n, device=start.device))
    sizes = torch.full((n,), size, dtype=start.dtype, device=start.device)
    moving = torch.ones(n, dtype=torch.bool, device=start.device)
    for _ in range(iterations):
        rows = torch.nonzero(moving).squeeze(1)
        if not len(rows):
            break
        proposal = step(x[rows], grads[rows], sizes[rows], rows)
        new_values, new_grads = value_and_grad(proposal, rows)
        accept = new_values <= values[rows]
        kept = rows[accept]
        sizes[rows[~accept]] *= shrink
        moved = (proposal[accept] - x[kept]).flatten(1).norm(dim=1)
        x[kept], values[kept], grads[kept] = proposal[accept], new_values[accept], new_grads[accept]
        moving[kept[moved < tolerance * x[kept].flatten(1).norm(dim=1)]] = False
    return x
