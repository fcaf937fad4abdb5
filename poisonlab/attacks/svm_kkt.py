"""Poisoning SVMs by gradient ascent on the validation hinge loss (Biggio, Nelson, Laskov, ICML 2012).

The gradient of the loss of the optimal SVM with respect to the attack points comes from the KKT conditions
of the margin support vectors (implicit differentiation), solved once per step for all attack points by the
adjoint method. Departures from the paper, said here: the loss is the mean (not the sum) of the validation hinge
losses; all attack points share one adjoint solve; an attack point that is itself a margin support vector gets
the extra term its own KKT condition contributes (the paper assumes it is an error vector).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from ..data import Dataset
from ..errors import ConfigError
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import Attack, check_choice, choose_bases
from .bilevel import attacker_labels, initial_points, projected_ascent


@dataclass
class KernelSVM:
    """A binary SVM (labels ±1) trained exactly by libsvm on a precomputed kernel."""

    kind: str
    C: float
    gamma: float

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            return a @ b.T
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-self.gamma * np.maximum(sq, 0.0))

    def kernel_grad_sum(self, weights: np.ndarray, x: np.ndarray, xc: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Σ_m weights_m ∂K(x_m, xc_p)/∂xc_p for every attack point p (k = K(x, xc), m×p)."""
        if self.kind == "linear":
            return np.broadcast_to(weights @ x, xc.shape)
        wk = weights[:, None] * k
        return 2 * self.gamma * (wk.T @ x - wk.sum(0)[:, None] * xc)

    def fit(self, x: np.ndarray, y: np.ndarray, gram: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Dual coefficients α (one per sample) and bias b of the SVM trained on (x, y)."""
        from sklearn.svm import SVC  # imported when used: sklearn costs seconds at start-up

        gram = self.kernel(x, x) if gram is None else gram
        svc = SVC(C=self.C, kernel="precomputed", tol=1e-8, shrinking=False).fit(gram, y)
        alpha = np.zeros(len(y))
        alpha[svc.support_] = np.abs(svc.dual_coef_[0])
        return alpha, float(svc.intercept_[0])


def hinge_loss(svm: KernelSVM, x, y, alpha, b, xv, yv) -> float:
    """Mean hinge loss on the validation set of the SVM (α, b) trained on (x, y)."""
    f = svm.kernel(xv, x) @ (alpha * y) + b
    return float(np.maximum(0.0, 1 - yv * f).mean())


def hypergradient(svm: KernelSVM, x: np.ndarray, y: np.ndarray, alpha: np.ndarray, b: float, xv: np.ndarray,
                  yv: np.ndarray, attack: np.ndarray) -> np.ndarray:
    """d(mean validation hinge loss)/d(attack points), from the margin support vectors' KKT conditions.

    x, y: the whole training set (attack points at the rows `attack`); returns one gradient row per attack point.
    """
    tol = 1e-6 * svm.C
    margin = np.flatnonzero((alpha > tol) & (alpha < svm.C - tol))
    f = svm.kernel(xv, x) @ (alpha * y) + b
    violated = yv * f < 1
    weight_v = yv[violated] / len(yv)
    xc = x[attack]
    # adjoint solve: M z = w, M = [[0, y_S^T], [y_S, Q_SS]], w = ∂(-L)/∂(b, α_S)
    ys = y[margin]
    m = np.zeros((len(margin) + 1, len(margin) + 1))
    m[0, 1:] = m[1:, 0] = ys
    m[1:, 1:] = ys[:, None] * ys[None, :] * svm.kernel(x[margin], x[margin])
    kv_s = svm.kernel(xv[violated], x[margin])
    w = np.concatenate([[weight_v.sum()], ys * (weight_v @ kv_s)])
    z = np.linalg.lstsq(m, w, rcond=None)[0]
    zs = z[1:]
    a = alpha * y
    t1 = svm.kernel_grad_sum(zs * ys, x[margin], xc, svm.kernel(x[margin], xc))
    t2 = svm.kernel_grad_sum(weight_v, xv[violated], xc, svm.kernel(xv[violated], xc))
    grad = a[attack][:, None] * (t1 - t2)
    slot = np.minimum(np.searchsorted(margin, attack), max(len(margin) - 1, 0))
    own = np.where(margin[slot] == attack, zs[slot], 0.0) if len(margin) else np.zeros(len(attack))
    if own.any():
        t3 = svm.kernel_grad_sum(a, x, xc, svm.kernel(x, xc))
        grad += (own * y[attack])[:, None] * t3
    return grad


@dataclass(frozen=True)
class SVMKKT(Attack):
    """Biggio et al. 2012: attack points with flipped labels, moved by projected gradient ascent on the validation
    hinge loss of the exactly retrained SVM, with a backtracking line search and a stopping rule.

    mode="greedy" adds and optimises one point at a time (earlier points stay in the training set);
    mode="joint" optimises all points together. Each point starts as a clone of a random training point with its
    label flipped, as in the paper, and is added to the training set (it replaces nothing). With a source
    class (--source-class) the attack is class-targeted: points start as clones of source-class samples labelled
    as the target class and the attacker minimises the hinge loss of the validation set with its source class
    relabelled.
    """

    name: ClassVar[str] = "svm-kkt"
    summary: ClassVar[str] = "Biggio et al. 2012: gradient ascent on an SVM's validation hinge loss via KKT"
    needs_validation: ClassVar[bool] = True
    honours: ClassVar[frozenset[str]] = frozenset({"source_class", "target_class"})

    kernel: str = "linear"
    C: float = 1.0
    gamma: float | None = None
    mode: str = "greedy"
    steps: int = 50
    step_size: float = 2.0
    tol: float = 1e-5

    def __post_init__(self) -> None:
        check_choice("kernel", self.kernel, ("linear", "rbf"))
        check_choice("mode", self.mode, ("greedy", "joint"))
        if self.C <= 0 or self.steps < 1 or self.step_size <= 0 or (self.gamma is not None and self.gamma <= 0):
            raise ConfigError(f"svm-kkt needs C > 0, steps >= 1, step_size > 0 and gamma > 0 (or None); got "
                              f"C={self.C}, steps={self.steps}, step_size={self.step_size}, gamma={self.gamma}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        if threat.num_classes != 2:
            raise ConfigError(f"svm-kkt poisons a binary SVM; the data has {threat.num_classes} classes. Pick two "
                              "with --classes A,B.")
        if validation is None or len(validation) == 0:
            raise ConfigError("svm-kkt needs the attacker's validation set: pass --val-size N.")
        x = train.x.flatten(1).double().numpy()
        y = train.y.double().numpy() * 2 - 1
        labels_v, sign = attacker_labels(validation, threat)
        xv, yv = validation.x.flatten(1).double().numpy(), labels_v.double().numpy() * 2 - 1
        gamma = self.gamma or 1.0 / (x.shape[1] * x.var())
        svm = KernelSVM(self.kernel, self.C, gamma)
        g = generator(seed, self.name)
        if threat.source_class is None:
            bases = choose_bases(torch.arange(len(train)), threat.budget, g, "training samples")
            labels = 1 - train.y[bases]
        else:
            bases, labels = initial_points(train, threat, g, self.name)
        xc, yc = x[bases.numpy()].copy(), labels.double().numpy() * 2 - 1
        if self.mode == "joint":
            xc = self.ascend(svm, x, y, xc, yc, xv, yv, sign)
        else:
            for i in range(len(xc)):
                x_fixed, y_fixed = np.concatenate([x, xc[:i]]), np.concatenate([y, yc[:i]])
                xc[i:i + 1] = self.ascend(svm, x_fixed, y_fixed, xc[i:i + 1], yc[i:i + 1], xv, yv, sign)
        poisons = torch.from_numpy(xc).float().clamp_(0, 1).reshape(-1, *train.shape)
        return PoisonSet(bases, poisons, labels, threat.num_classes, self.name, threat.target_class,
                         insertion="add", params={**asdict(self), "gamma": gamma}, source_class=threat.source_class)

    def ascend(self, svm: KernelSVM, x, y, xc, yc, xv, yv, sign: float = 1.0) -> np.ndarray:
        """Projected gradient ascent of the attack points `xc` (labels yc) on sign × the validation hinge loss."""
        y_all = np.concatenate([y, yc])
        attack = np.arange(len(x), len(x) + len(xc))

        def evaluate(points):
            x_all = np.concatenate([x, points])
            alpha, b = svm.fit(x_all, y_all)
            return sign * hinge_loss(svm, x_all, y_all, alpha, b, xv, yv), (x_all, alpha, b)

        def gradient(points, state):
            x_all, alpha, b = state
            return sign * hypergradient(svm, x_all, y_all, alpha, b, xv, yv, attack)

        return projected_ascent(xc, evaluate, gradient, self.step_size, self.steps, self.tol)
