"""Bilevel poisoning of linear learners solved exactly: logistic regression, ridge and LASSO (Xiao et al. 2015;
Jagielski et al. 2018 for the least-squares learners), by projected gradient ascent with the implicit hypergradient
of `attacks/bilevel.py`.

Departures from the papers, said here: the attacker's objective is the mean validation loss of the learner's own
training loss (cross-entropy for logistic, squared error to ±1 codes for ridge and LASSO); attack points start as
clones of training samples with flipped labels and keep those labels (label and features both poisoned, as in
Biggio et al. 2012); beyond two classes the learners are multinomial (logistic) or one-vs-rest (ridge, LASSO).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from ..data import Dataset
from ..errors import ConfigError
from ..models.exact import solve
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import Attack, check_choice
from .bilevel import attacker_labels, implicit_hypergradient, initial_points, projected_ascent, solve_psd

LOSSES = {"logistic": "cross-entropy", "ridge": "squared", "lasso": "squared-l1"}


@dataclass(frozen=True)
class LinearLearner:
    """One of the exactly solved linear models, as a function of its flat parameters θ = (W, b)."""

    loss: str
    num_classes: int
    features: int
    C: float

    @property
    def outputs(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    def decision(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        w = theta[:self.outputs * self.features].reshape(self.outputs, self.features)
        return x @ w.T + theta[self.outputs * self.features:]

    def mean_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.decision(theta, x)
        if self.loss == "cross-entropy":
            if self.outputs == 1:
                return F.softplus(-(2.0 * y - 1.0) * f[:, 0]).mean()
            return F.cross_entropy(f, y)
        codes = 2.0 * y[:, None].to(f.dtype) - 1.0 if self.outputs == 1 else \
            2.0 * F.one_hot(y, self.num_classes).to(f.dtype) - 1.0
        return 0.5 * ((f - codes) ** 2).sum(1).mean()

    def objective(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training objective C·Σ loss + penalty, divided by C·n (same optimum, better scaled)."""
        w = theta[:self.outputs * self.features]
        penalty = w.abs().sum() if self.loss == "squared-l1" else 0.5 * w @ w
        return self.mean_loss(theta, x, y) + penalty / (self.C * len(y))

    def hessian(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇²_θ of `objective`, in closed form: Zᵀ G Z / n with Z = [x, 1] and G the loss's curvature in the
        decision values (σ(1-σ) or softmax's diag(s) - ssᵀ for cross-entropy, I for squared), plus the L2
        penalty's 1/(C·n) on the weights (LASSO's penalty has no curvature where it is differentiable).

        Softmax is unchanged when every intercept moves by the same amount, so that direction u is a null vector
        of the multinomial Hessian; we add uuᵀ, which makes the matrix definite and leaves H⁻¹g unchanged for
        every gradient g of a softmax loss (all are orthogonal to u)."""
        n, k, d = len(y), self.outputs, self.features
        z = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
        if self.loss.startswith("squared"):
            h = torch.kron(torch.eye(k, dtype=x.dtype), z.T @ z / n)
        elif k == 1:
            p = torch.sigmoid(self.decision(theta, x)[:, 0])
            h = z.T @ ((p * (1 - p))[:, None] * z) / n
        else:
            s = torch.softmax(self.decision(theta, x), 1)
            curvature = torch.diag_embed(s) - s[:, :, None] * s[:, None, :]
            h = torch.einsum("ia,ikl,ib->kalb", z, curvature, z).reshape(k * (d + 1), k * (d + 1)) / n
            intercepts = torch.arange(k) * (d + 1) + d
            h[intercepts[:, None], intercepts[None, :]] += 1.0 / k
        if k > 1:  # from the (class, feature-or-1) layout of h to θ's layout (all weights, then the intercepts)
            order = torch.cat([(torch.arange(k)[:, None] * (d + 1) + torch.arange(d)).ravel(),
                               torch.arange(k) * (d + 1) + d])
            h = h[order][:, order]
        if self.loss != "squared-l1":
            h[:k * d, :k * d] += torch.eye(k * d, dtype=x.dtype) / (self.C * n)
        return h

    def fit(self, x: torch.Tensor, y: torch.Tensor, warm: torch.Tensor | None = None) -> torch.Tensor:
        """θ* on (x, y). LASSO: scikit-learn's coordinate descent (the victim's solver). Ridge and logistic:
        Newton's method with the closed-form Hessian, from `warm` (the attack's previous optimum) or, cold, from
        zeros (ridge: one step is exact) or scikit-learn's lbfgs solution (logistic), iterated to round-off."""
        if self.loss == "squared-l1" or (warm is None and self.loss == "cross-entropy"):
            weight, bias = solve(self.loss, x.numpy(), y.numpy(), self.num_classes, self.C)
            theta = torch.from_numpy(np.concatenate([weight.ravel(), bias]))
            if self.loss == "squared-l1":
                return theta
        else:
            theta = torch.zeros(self.outputs * (self.features + 1), dtype=x.dtype) if warm is None else warm
        value = self.objective(theta, x, y)
        for _ in range(50):
            step = solve_psd(self.hessian(theta, x, y), torch.func.grad(self.objective)(theta, x, y))
            if self.loss == "squared":
                return theta - step  # a quadratic's Newton step is exact
            scale = 1.0
            while (new := self.objective(theta - scale * step, x, y)) > value + 1e-15 * abs(value) and scale > 1e-6:
                scale /= 2  # damped Newton: far from the optimum a full step can overshoot
            theta, value = theta - scale * step, new
            if float(step.abs().max()) <= 1e-10 * (1 + float(theta.abs().max())):
                return theta
        raise RuntimeError("Newton's method did not converge on a strictly convex problem; please report this.")

    def free(self, theta: torch.Tensor) -> torch.Tensor | None:
        """The coordinates that move with the data: LASSO's nonzero weights and the intercepts; else all."""
        if self.loss != "squared-l1":
            return None
        active = theta != 0
        active[self.outputs * self.features:] = True
        return torch.nonzero(active).squeeze(1)


def linear_hypergradient(learner: LinearLearner, theta, x, y, points, point_labels, xv, yv, sign=1.0):
    """d(sign · mean validation loss)/d(points) for the learner trained on (x, y) + (points, point_labels)."""
    y_all = torch.cat([y, point_labels])

    def objective(t, p):
        return learner.objective(t, torch.cat([x, p]), y_all)

    def outer(t):
        return sign * learner.mean_loss(t, xv, yv)

    free = learner.free(theta)
    hessian = learner.hessian(theta, torch.cat([x, points]), y_all)
    if free is not None:
        hessian = hessian[free][:, free]
    return implicit_hypergradient(objective, outer, theta, points, free, hessian)


@dataclass(frozen=True)
class BilevelLinear(Attack):
    """Xiao et al. 2015: attack points moved by projected gradient ascent on the attacker's validation objective
    of the exactly retrained linear learner (`learner`: logistic | ridge | lasso, the same C as the victim's
    `--optimizer exact --C`). mode="joint" (the default) optimises all points together, "greedy" one at a time
    (slower by about the number of points, and no stronger on MNIST 0 vs 4). Points are added
    to the training set. With a source class (--source-class) the attack is class-targeted."""

    name: ClassVar[str] = "bilevel-linear"
    summary: ClassVar[str] = "Xiao et al. 2015: gradient ascent through exact logistic/ridge/LASSO retraining (IFT)"
    needs_validation: ClassVar[bool] = True
    honours: ClassVar[frozenset[str]] = frozenset({"source_class", "target_class"})

    learner: str = "logistic"
    C: float = 1.0
    mode: str = "joint"
    steps: int = 30
    step_size: float = 2.0
    tol: float = 1e-6

    def __post_init__(self) -> None:
        check_choice("learner", self.learner, tuple(LOSSES))
        check_choice("mode", self.mode, ("greedy", "joint"))
        if self.C <= 0 or self.steps < 1 or self.step_size <= 0:
            raise ConfigError(f"bilevel-linear needs C > 0, steps >= 1 and step_size > 0; got C={self.C}, "
                              f"steps={self.steps}, step_size={self.step_size}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        if validation is None or len(validation) == 0:
            raise ConfigError("bilevel-linear needs the attacker's validation set: pass --val-size N.")
        learner = LinearLearner(LOSSES[self.learner], threat.num_classes, train.x[0].numel(), self.C)
        bases, labels = initial_points(train, threat, generator(seed, self.name), self.name)
        yv, sign = attacker_labels(validation, threat)
        x, y = train.x.flatten(1).double(), train.y
        xc = x[bases].numpy().copy()
        xv = validation.x.flatten(1).double()
        if self.mode == "joint":
            xc = self.ascend(learner, x, y, xc, labels, xv, yv, sign)
        else:
            for i in range(len(xc)):
                x_fixed, y_fixed = torch.cat([x, torch.from_numpy(xc[:i])]), torch.cat([y, labels[:i]])
                xc[i:i + 1] = self.ascend(learner, x_fixed, y_fixed, xc[i:i + 1], labels[i:i + 1], xv, yv, sign)
        poisons = torch.from_numpy(xc).float().clamp_(0, 1).reshape(-1, *train.shape)
        return PoisonSet(bases, poisons, labels, threat.num_classes, self.name, threat.target_class,
                         insertion="add", params=asdict(self), source_class=threat.source_class)

    def ascend(self, learner: LinearLearner, x, y, xc, labels, xv, yv, sign) -> np.ndarray:
        y_all = torch.cat([y, labels])
        last: list[torch.Tensor | None] = [None]  # warm start: candidates lie near the previous point

        def evaluate(points):
            theta = learner.fit(torch.cat([x, torch.from_numpy(points)]), y_all, warm=last[0])
            last[0] = theta
            return float(sign * learner.mean_loss(theta, xv, yv)), theta

        def gradient(points, theta):
            return linear_hypergradient(learner, theta, x, y, torch.from_numpy(points), labels, xv, yv,
                                        sign).numpy()

        return projected_ascent(xc, evaluate, gradient, self.step_size, self.steps, self.tol)
