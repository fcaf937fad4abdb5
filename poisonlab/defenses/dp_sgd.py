"""DP-SGD (Abadi et al. 2016) as a poisoning defense (Hong et al. 2020): per-sample gradient clipping and Gaussian
noise bound how much any few training samples can move the model."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError
from ..models.train import augment, loss_fn, make_optimizer
from ..seeding import derive_seed, generator
from .base import Counts, Defended, Defense, DefenseContext, check_trains_by_steps


@dataclass(frozen=True)
class PrivacyCounts(Counts):
    """The privacy spent: ε at δ (the same in every trial of a scenario)."""

    dp_epsilon: float
    dp_delta: float

    @classmethod
    def summarise(cls, counts: list[PrivacyCounts]) -> dict:
        return {"dp_epsilon": counts[0].dp_epsilon, "dp_delta": counts[0].dp_delta}

    @staticmethod
    def describe(summary: dict) -> str:
        return f"(ε = {summary['dp_epsilon']:.2g}, δ = {summary['dp_delta']:.1g})"


@dataclass
class DPSGD(Defense):
    """Train with Opacus (per-sample gradients, clipping to `max_grad_norm`, noise of `noise_multiplier` ×
    that norm, Poisson sampling of batches with rate batch_size / N) for the recipe's epochs, optimizer and learning
    rate. Batch norm, which mixes samples, is replaced by group norm (Opacus' ModuleValidator.fix). The privacy
    spent, ε at `delta` (default 1/N), is reported with the result."""

    name: ClassVar[str] = "dp-sgd"
    summary: ClassVar[str] = "per-sample clipping and Gaussian noise via Opacus (Abadi et al. 2016; Hong et al. 2020)"
    Counts: ClassVar[type] = PrivacyCounts
    settings: ClassVar[tuple[str, ...]] = ("scratch",)
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float | None = None

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0 or self.max_grad_norm <= 0 or (self.delta is not None and not 0 < self.delta < 1):
            raise ConfigError("dp-sgd: noise_multiplier must be ≥ 0, max_grad_norm > 0 and delta in (0, 1); got "
                              f"{self.noise_multiplier}, {self.max_grad_norm}, {self.delta}.")

    def defend(self, context: DefenseContext) -> Defended:
        """A fresh victim trained privately on the poisoned set, and the privacy it spent."""
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        recipe, seed, train_set = context.recipe, context.seed, context.poisoned
        check_trains_by_steps(self.name, recipe)
        with torch.random.fork_rng(), warnings.catch_warnings():
            # seeded generators are deliberate (reproducible runs); Opacus' hooks warn on inputs without grad
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            torch.manual_seed(derive_seed(seed, "dp-sgd") % 2**63)
            model = ModuleValidator.fix(context.build())
            optimizer = make_optimizer(list(model.parameters()), recipe)
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_set.x, train_set.y),
                                                 batch_size=recipe.batch_size, shuffle=True,
                                                 generator=generator(seed, "dp-sgd-batches"))
            engine = PrivacyEngine(accountant="rdp")
            private, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.max_grad_norm, noise_generator=generator(seed, "dp-sgd-noise"))
            g = generator(seed, "dp-sgd-augment")
            private.train()
            for _ in range(recipe.epochs):
                for x, y in loader:
                    if len(y) == 0:
                        continue
                    loss = loss_fn(model, private(augment(x, recipe.augment, g, recipe.pad)), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        delta = self.delta if self.delta is not None else 1 / len(train_set)
        epsilon = engine.get_epsilon(delta) if self.noise_multiplier > 0 else float("inf")
        return Defended(private._module.eval(), PrivacyCounts(epsilon, delta))
