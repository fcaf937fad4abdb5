"""Witches' Brew (Geiping et al. 2021): clean-label poisons whose training gradient matches the target's
adversarial gradient, so that training on them pulls the target toward the adversarial class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from ..data import Dataset
from ..errors import ConfigError
from ..models import Classifier, for_second_order
from ..models.train import augment
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import GradientAttack
from .feature_space import adversarial_labels, open_targeted, project


def parameter_gradient(model: Classifier, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """∇θ of the mean cross-entropy of `model` on (x, y), flattened over every trainable parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def target_gradients(models: list[Classifier], target: torch.Tensor, adversarial_class: int) -> list[torch.Tensor]:
    """Per model, ∇θ L(target, adversarial class): what the poisons' gradient is aligned with."""
    adversarial = adversarial_labels(target, adversarial_class)
    return [parameter_gradient(m, target, adversarial).detach() for m in models]


def gradient_alignment(models: list[Classifier], poisons: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
                       adversarial_class: int, create_graph: bool = False,
                       target_grads: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over models of cos(∇θ L(poisons, labels), ∇θ L(target, adversarial class)) (Geiping et al., eq. 3):
    1 means a step on the poisons is a step toward misclassifying the target. `target_grads`: the second
    gradients when already computed (target_gradients; they do not change while the poisons are optimised)."""
    if target_grads is None:
        target_grads = target_gradients(models, target, adversarial_class)
    return alignment(models, poisons, labels, target_grads, create_graph)


def alignment(models: list[Classifier], poisons: torch.Tensor, labels: torch.Tensor, grads: list[torch.Tensor],
              create_graph: bool = False) -> torch.Tensor:
    """Mean over models of the cosine between the poisons' training gradient and that model's entry of `grads`."""
    total = poisons.new_zeros(())
    for m, grad in zip(models, grads, strict=True):
        total = total + F.cosine_similarity(parameter_gradient(m, poisons, labels, create_graph=create_graph), grad,
                                            dim=0)
    return total / len(models)


def match(models: list[Classifier], bases: torch.Tensor, labels: torch.Tensor, grads: list[torch.Tensor], eps: float,
          steps: int, lr: float, augment_views: bool, g: torch.Generator, init: str = "uniform",
          refresh: Callable[[int, torch.Tensor], tuple[list[Classifier], list[torch.Tensor]] | None] | None = None
          ) -> torch.Tensor:
    """Poisons in the eps box of `bases` whose gradient on (poisons, labels) aligns with `grads` (one per model):
    Adam on the signed gradient of 1 - alignment at `lr`, divided by 10 at 3/8, 5/8 and 7/8 of the steps, from a
    start uniform in the box (`init="uniform"`) or Gaussian with deviation eps clipped to it ("randn"), with a
    random flip and crop of the poisons at each step when `augment_views`. After each step `refresh(step, poisons)`
    may return new models and gradients to match from then on (sleeper agent's retraining)."""
    noise = torch.rand(bases.shape, generator=g) * 2 - 1 if init == "uniform" else torch.randn(bases.shape, generator=g)
    delta = (noise.to(bases.device) * eps).clamp(-eps, eps).requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [steps * k // 8 for k in (3, 5, 7)], 0.1)
    for step in range(steps):
        x = (bases + delta).clamp(0, 1)
        if augment_views:
            x = augment(x, "flip-crop", g)
        loss = 1 - alignment(models, x, labels, grads, create_graph=True)
        (grad,) = torch.autograd.grad(loss, delta)
        delta.grad = grad.sign()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            delta.copy_(project(bases + delta, bases, eps) - bases)
        if refresh is not None and (renewed := refresh(step, (bases + delta.detach()).clamp(0, 1))) is not None:
            models, grads = renewed
    return (bases + delta.detach()).clamp(0, 1)


@dataclass(frozen=True)
class WitchesBrew(GradientAttack):
    """Maximise the gradient alignment above over perturbations in the eps box (Geiping et al. 2021, eq. 3-4):
    Adam on the signed gradient (lr in pixel units of [0, 1] images: the paper's 0.1 on images divided by
    CIFAR-10's standard deviation, ≈ 0.25; divided by 10 at 3/8, 5/8 and 7/8 of the steps),
    differentiable flips and crops on every step (`augment`), `restarts` random starts of which the best
    alignment wins, and an ensemble when several surrogates are given. The paper uses 240 steps and 8
    restarts on ResNet-18s; the defaults here are 240 and 1 (CPU)."""

    name: ClassVar[str] = "witches-brew"
    summary: ClassVar[str] = "clean-label targeted: gradient matching with the target (Geiping et al. 2021)"

    steps: int = 240
    lr: float = 0.025
    restarts: int = 1
    augment: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.restarts < 1:
            raise ConfigError(f"witches-brew needs steps >= 1, lr > 0 and restarts >= 1; got {self.steps}, {self.lr}, "
                              f"{self.restarts}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        g = generator(seed, self.name)
        opening = open_targeted(self, train, threat, surrogate, g)
        # crafting copies in eval mode (batch-norm statistics fixed), NCHW for the second-order gradients
        models = [for_second_order(m).eval() for m in opening.models]
        target, bases, labels = opening.target, opening.bases, opening.labels
        target_grads = target_gradients(models, target, threat.target_class)  # fixed while the poisons move
        best, best_alignment = bases, -2.0
        for _ in range(self.restarts):
            poisons = self.brew(models, bases, labels, target, threat, target_grads, g)
            alignment = float(gradient_alignment(models, poisons, labels, target, threat.target_class,
                                                 target_grads=target_grads))
            if alignment > best_alignment:
                best, best_alignment = poisons, alignment
        return opening.poison_set(self, best, threat, alignment=best_alignment)

    def brew(self, models, bases, labels, target, threat, target_grads, g) -> torch.Tensor:
        return match(models, bases, labels, target_grads, threat.eps, self.steps, self.lr, self.augment, g)
