"""Back-gradient poisoning (Muñoz-González et al. 2017): the hypergradient of the attacker's validation objective
through T unrolled steps of the learner's gradient descent, in reverse mode, so that any differentiable learner
(logistic regression, an MLP, a small convnet) can be poisoned.

Departure from the paper, said here: the paper reverses the descent trajectory from its end point (w_{t-1} ≈
w_t + η∇L(w_t)), which drifts from the true trajectory in finite precision; we keep every `segment`-th state of
the forward pass and recompute each segment before reversing it, which gives the exact gradient of the unrolled
training with memory bounded by (T / segment + segment) parameter vectors (segment = √T by default).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
from torch.func import functional_call

from ..data import Dataset
from ..errors import ConfigError
from ..models import MODELS, build_model
from ..models.train import loss_fn
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import Attack, check_choice
from .bilevel import attacker_labels, initial_points, projected_ascent


def descend(train_loss: Callable, w: torch.Tensor, points: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """`steps` steps of full-batch gradient descent from w (no graph kept)."""
    for _ in range(steps):
        w = w - lr * torch.func.grad(train_loss)(w, points)
    return w


def unrolled_hypergradient(train_loss: Callable, outer: Callable, w0: torch.Tensor, points: torch.Tensor,
                           lr: float, steps: int, segment: int | None = None) -> tuple[torch.Tensor, float]:
    """(d outer(w_T) / d points, outer(w_T)) for w_{t+1} = w_t - lr ∇_w train_loss(w_t, points), by reverse mode
    over the T steps: dw ← dw - lr H_t dw, dpoints ← dpoints - lr (∂²L/∂points∂w)ᵀ dw, with the states
    recomputed segment by segment from checkpoints."""
    segment = segment or max(1, math.isqrt(steps))
    checkpoints, w = [w0.detach()], w0.detach()
    for start in range(0, steps, segment):
        w = descend(train_loss, w, points, lr, min(segment, steps - start))
        checkpoints.append(w)
    w_final = w.clone().requires_grad_()
    value = outer(w_final)
    (dw,) = torch.autograd.grad(value, w_final)
    dpoints = torch.zeros_like(points)
    x = points.detach().clone().requires_grad_()
    for k in reversed(range(len(checkpoints) - 1)):
        length = min(segment, steps - k * segment)
        states = [checkpoints[k]]
        for _ in range(length - 1):
            states.append(descend(train_loss, states[-1], points, lr, 1))
        for w_t in reversed(states):
            w_t = w_t.clone().requires_grad_()
            (g,) = torch.autograd.grad(train_loss(w_t, x), w_t, create_graph=True)
            hvp, mixed = torch.autograd.grad(g, (w_t, x), grad_outputs=dw)
            dw, dpoints = dw - lr * hvp, dpoints - lr * mixed
    return dpoints, float(value.detach())


class FlatModel:
    """A poisonlab model as a function of one flat parameter vector. Batch-norm layers normalise with the
    statistics of the batch they see and keep no running averages (a pure function of the parameters)."""

    def __init__(self, model: torch.nn.Module):
        self.model = copy.deepcopy(model).train()
        for module in self.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.track_running_stats, module.running_mean, module.running_var = False, None, None
                module.num_batches_tracked = None
        model = self.model
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.w0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
        self.buffers = {n: b.clone() for n, b in model.named_buffers()}

    def __call__(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            params[name] = w[offset:offset + size].reshape(shape)
            offset += size
        return functional_call(self.model, (params, self.buffers), (x,))


@dataclass(frozen=True)
class BackGradient(Attack):
    """Muñoz-González et al. 2017: attack points (clones with the attacker's labels) moved by projected gradient
    ascent on the validation objective of `model` trained by `train_steps` steps of full-batch gradient descent
    (learning rate `lr`, L2 `weight_decay`) from a seeded initialisation. mode="joint" moves all points together
    (the default: each evaluation retrains the learner), "greedy" one at a time. Points are added to the
    training set; with --source-class the attack is class-targeted."""

    name: ClassVar[str] = "back-gradient"
    summary: ClassVar[str] = "Muñoz-González et al. 2017: ascent through T unrolled gradient-descent steps"
    needs_validation: ClassVar[bool] = True
    honours: ClassVar[frozenset[str]] = frozenset({"source_class", "target_class"})

    model: str = "logistic"
    train_steps: int = 100
    lr: float = 0.1
    weight_decay: float = 1e-3
    segment: int | None = None
    mode: str = "joint"
    steps: int = 20
    step_size: float = 2.0
    tol: float = 1e-6

    def __post_init__(self) -> None:
        check_choice("model", self.model, tuple(MODELS))
        check_choice("mode", self.mode, ("greedy", "joint"))
        if self.train_steps < 1 or self.lr <= 0 or self.weight_decay < 0 or self.steps < 1 or self.step_size <= 0 \
                or (self.segment is not None and self.segment < 1):
            raise ConfigError(f"back-gradient needs train_steps >= 1, lr > 0, weight_decay >= 0, steps >= 1, "
                              f"step_size > 0 and segment >= 1 (or None); got {asdict(self)}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        if validation is None or len(validation) == 0:
            raise ConfigError("back-gradient needs the attacker's validation set: pass --val-size N.")
        net = build_model(self.model, train.shape, threat.num_classes, seed=seed)
        flat = FlatModel(net)
        bases, labels = initial_points(train, threat, generator(seed, self.name), self.name)
        yv, sign = attacker_labels(validation, threat)
        xc = train.x[bases].numpy().copy()
        if self.mode == "joint":
            xc = self.ascend(flat, net, train.x, train.y, xc, labels, validation.x, yv, sign)
        else:
            for i in range(len(xc)):
                x_fixed = torch.cat([train.x, torch.from_numpy(xc[:i])])
                xc[i:i + 1] = self.ascend(flat, net, x_fixed, torch.cat([train.y, labels[:i]]), xc[i:i + 1],
                                          labels[i:i + 1], validation.x, yv, sign)
        return PoisonSet(bases, torch.from_numpy(xc).clamp_(0, 1), labels, threat.num_classes, self.name,
                         threat.target_class, insertion="add", params=asdict(self), source_class=threat.source_class)

    def ascend(self, flat: FlatModel, net, x, y, xc, labels, xv, yv, sign) -> np.ndarray:
        y_all = torch.cat([y, labels])

        def train_loss(w, points):
            return loss_fn(net, flat(w, torch.cat([x, points])), y_all) + 0.5 * self.weight_decay * (w @ w)

        def outer(w):
            return sign * loss_fn(net, flat(w, xv), yv)

        def evaluate(points):
            w = descend(train_loss, flat.w0, torch.from_numpy(points), self.lr, self.train_steps)
            return float(outer(w)), None

        def gradient(points, _):
            grad, _ = unrolled_hypergradient(train_loss, outer, flat.w0, torch.from_numpy(points), self.lr,
                                             self.train_steps, self.segment)
            return grad.numpy()

        return projected_ascent(xc, evaluate, gradient, self.step_size, self.steps, self.tol)
