"""Adversarial poisoning (Geiping et al. 2021, "What doesn't kill you makes you robust(er)"): craft poisons
against the current model during training and train on them under their true labels, to become insensitive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError
from ..models import Classifier, train
from .base import Defended, Defense, DefenseContext, NoCounts, check_trains_by_steps


@dataclass
class AdversarialPoisoning(Defense):
    """In every batch, a `poison_fraction` of the images (bases) is perturbed within `eps` (L-inf) by `steps`
    signed-gradient steps so that their features collide with those of other images of the same batch (the
    targets), as a feature-collision attacker would do against the current model; the step then trains on
    the perturbed bases and the targets, all under their true labels (Geiping et al. 2021, Alg. 1).

    Departure: the paper crafts with gradient matching against each batch; feature collision is cheaper (one
    forward/backward per step) and the same threat model (clean-label, eps-bounded)."""

    name: ClassVar[str] = "adversarial-poisoning"
    summary: ClassVar[str] = "train on poisons crafted on the fly against the current model (Geiping et al. 2021)"
    settings: ClassVar[tuple[str, ...]] = ("scratch",)
    poison_fraction: float = 0.25
    eps: float = 16 / 255
    steps: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.poison_fraction <= 0.5 or not 0 < self.eps <= 1 or self.steps < 1:
            raise ConfigError("adversarial-poisoning: poison_fraction must be in (0, 0.5], eps in (0, 1], steps ≥ 1; "
                              f"got {self.poison_fraction}, {self.eps}, {self.steps}.")

    def defend(self, context: DefenseContext) -> Defended:
        """A fresh victim trained on the poisoned set with adversarial poisons crafted into every batch."""
        check_trains_by_steps(self.name, context.recipe)
        model = train(context.build(), context.poisoned, context.recipe, seed=context.seed,
                      batch_hook=self.poison_batch)
        return Defended(model, NoCounts())

    def poison_batch(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        """Perturb the first `poison_fraction` of the (already shuffled) batch toward targets of other classes."""
        n = int(self.poison_fraction * len(x))
        if n == 0:
            return x, y
        bases, rest = x[:n], x[n:]
        # each base's target: the image a random cyclic shift puts in its place (nine times in ten another class)
        shift = torch.randint(1, len(x), (), generator=g)
        targets = x.roll(-int(shift), 0)[:n]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            goal = model.features(targets)
        delta = torch.zeros_like(bases, requires_grad=True)
        step = 2.5 * self.eps / self.steps
        for _ in range(self.steps):
            loss = (model.features((bases + delta).clamp(0, 1)) - goal).pow(2).sum()
            grad, = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta -= step * grad.sign()
                delta.clamp_(-self.eps, self.eps)
        model.train(was_training)
        return torch.cat([(bases + delta.detach()).clamp(0, 1), rest]), y
