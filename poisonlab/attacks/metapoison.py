"""MetaPoison (Huang et al. 2020): clean-label poisons optimised through unrolled victim training steps, on an
ensemble of networks at staggered stages of training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch.func import functional_call
from torch.nn import functional as F

from ..data import Dataset
from ..device import device_of
from ..errors import ConfigError
from ..models import Classifier, for_second_order
from ..models.train import augment
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import GradientAttack
from .feature_space import adversarial_labels, open_targeted, project


@dataclass(frozen=True)
class MetaPoison(GradientAttack):
    """min over poisons (eps box) of the adversarial loss L(f_θK(target), adversarial class), where θK is θ
    after `unroll` SGD steps (lr `inner_lr`) on a batch of the poisons and `batch_size` clean images,
    differentiated through the unrolled steps (Huang et al. 2020, eq. 2-3). The poisons weigh in that batch's
    loss at their share of the training set (budget / training images), as in the victim's own batches;
    unweighted, a batch mostly of the adversarial class would pull the target there whatever the perturbation.
    The ensemble holds `stages` copies of the surrogate's architecture, re-initialised and trained for 0,
    `stage_epochs`, 2·`stage_epochs`, ... epochs on the training set; every crafting step also advances each
    copy by one such batch (the staggered ensemble of the paper, which has 24 models and 60 steps per epoch of
    crafting). Adam on the poisons (lr in pixel units of [0, 1] images), projected after each step. Every batch
    is flipped and cropped (`augment`, as the victims of the CIFAR-10 protocols are); set augment=False against
    victims trained without augmentation: a mismatch erases the pull (tests/test_gradient_attacks.py).
    `params["adversarial_loss"]` holds the unrolled adversarial loss of the final ensemble on one batch with the
    bases and with the poisons. Departure: additive perturbations only (no ReColorAdv colour term)."""

    name: ClassVar[str] = "metapoison"
    summary: ClassVar[str] = "clean-label targeted: poisons through unrolled training, staggered ensemble (2020)"

    steps: int = 100
    lr: float = 0.025
    unroll: int = 2
    inner_lr: float = 0.1
    stages: int = 4
    stage_epochs: int = 2
    batch_size: int = 128
    augment: bool = True

    def __post_init__(self) -> None:
        if min(self.steps, self.unroll, self.stages, self.batch_size) < 1 or self.stage_epochs < 0 or \
                self.lr <= 0 or self.inner_lr <= 0:
            raise ConfigError(f"metapoison needs steps, unroll, stages, batch_size >= 1, stage_epochs >= 0 and "
                              f"positive learning rates; got {asdict(self)}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        g = generator(seed, self.name)
        opening = open_targeted(self, train, threat, surrogate, g)
        target, bases, labels = opening.target, opening.bases, opening.labels
        models = [self.staggered(opening.models[0], train, stage, g) for stage in range(self.stages)]
        optimizers = [torch.optim.SGD(m.parameters(), lr=self.inner_lr, momentum=0.9) for m in models]
        adversarial = adversarial_labels(target, threat.target_class)
        weights = self.batch_weights(len(bases), len(bases) / len(train), bases.device)
        delta = torch.zeros_like(bases, requires_grad=True)
        adam = torch.optim.Adam([delta], lr=self.lr)
        for _ in range(self.steps):
            clean_x, clean_y = self.clean_batch(train, g, bases.device)
            x = augment(torch.cat([(bases + delta).clamp(0, 1), clean_x]), self.augmentation, g)
            y = torch.cat([labels, clean_y])
            loss = sum(self.adversarial_loss(m, x, y, weights, target, adversarial) for m in models) / len(models)
            (grad,) = torch.autograd.grad(loss, delta)
            delta.grad = grad
            adam.step()
            with torch.no_grad():
                delta.copy_(project(bases + delta, bases, threat.eps) - bases)
            for m, opt in zip(models, optimizers, strict=True):  # the ensemble keeps training, poisons included
                m.train()
                opt.zero_grad(set_to_none=True)
                weighted_loss(m(x.detach()), y, weights).backward()
                opt.step()
        poisons = (bases + delta.detach()).clamp(0, 1)
        clean_x, clean_y = self.clean_batch(train, g, bases.device)
        y = torch.cat([labels, clean_y])
        before, after = (float(sum(self.adversarial_loss(m, torch.cat([x, clean_x]), y, weights, target,
                                                         adversarial).detach() for m in models)) / len(models)
                         for x in (bases, poisons))
        return opening.poison_set(self, poisons, threat, adversarial_loss=[before, after])

    @property
    def augmentation(self) -> str:
        return "flip-crop" if self.augment else "none"

    def clean_batch(self, train: Dataset, g: torch.Generator, device: torch.device):
        """`batch_size` random clean training images (and labels), to go beside the poisons."""
        batch = torch.randint(len(train), (self.batch_size,), generator=g)
        return train.x[batch].to(device), train.y[batch].to(device)

    def batch_weights(self, poisons: int, share: float, device: torch.device) -> torch.Tensor:
        """Per-sample loss weights of a batch of `poisons` poisons then `batch_size` clean images: the poisons
        together weigh `share`, the clean images the rest."""
        return torch.cat([torch.full((poisons,), share / poisons, device=device),
                          torch.full((self.batch_size,), (1 - share) / self.batch_size, device=device)])

    def adversarial_loss(self, model: Classifier, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                         target: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        """L(f_θK(target), adversarial) after `unroll` differentiable SGD steps on (x, y) from the model's weights."""
        params = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
        buffers = {k: v.clone() for k, v in model.named_buffers()}  # batch-norm statistics stay the model's own
        model.train()
        for _ in range(self.unroll):
            inner = weighted_loss(functional_call(model, (params, buffers), (x,)), y, weights)
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
            params = {k: p - self.inner_lr * gr for (k, p), gr in zip(params.items(), grads, strict=True)}
        model.eval()
        return F.cross_entropy(functional_call(model, (params, buffers), (target,)), adversarial)

    def staggered(self, template: Classifier, train: Dataset, stage: int, g: torch.Generator) -> Classifier:
        """A copy of the surrogate's architecture (NCHW: `for_second_order`), re-initialised and trained
        `stage * stage_epochs` epochs."""
        model = for_second_order(template)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        model.requires_grad_(True).train()
        device = device_of(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.inner_lr, momentum=0.9)
        for _ in range(stage * self.stage_epochs):
            for batch in torch.randperm(len(train), generator=g).split(self.batch_size):
                x, y = train.x[batch].to(device), train.y[batch].to(device)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(augment(x, self.augmentation, g)), y).backward()
                optimizer.step()
        return model


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(logits, y, reduction="none") * weights).sum()
