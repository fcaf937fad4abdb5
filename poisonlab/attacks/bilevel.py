"""The shared core of gradient-based bilevel poisoning: the attacker's objective, implicit differentiation
through an exact optimum, and the projected ascent that moves attack points along the hypergradient.

For θ*(x) = argmin_θ F(θ, x) (F twice differentiable in θ near θ*, H = ∇²_θ F invertible on the free
coordinates), the implicit function theorem gives dV(θ*)/dx = -(∂²F/∂x∂θ) H⁻¹ ∇_θ V (Xiao et al. 2015, eq. 7;
Mei & Zhu 2015). One solve with H serves every attack point (adjoint form); the mixed derivative is one
vector-Jacobian product. Coordinates held at zero by an L1 penalty (LASSO) are not free: the solve runs on the
active set, as in Xiao et al. 2015.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data import Dataset
from ..threat import ThreatModel
from .base import choose_bases

DENSE_LIMIT = 3000  # free parameters up to which H is formed and factorised; beyond, conjugate gradients


def attacker_labels(validation: Dataset, threat: ThreatModel) -> tuple[torch.Tensor, float]:
    """The labels the attacker's objective is measured against, and the sign of that objective.

    Indiscriminate (no source class): the true labels, and the attacker maximises the validation loss (+1).
    Class-targeted: source-class samples relabelled as the target class, and the attacker minimises the loss on
    that relabelled set (-1), which moves the source class while keeping the others where they are.
    """
    if threat.source_class is None:
        return validation.y, 1.0
    y = validation.y.clone()
    y[y == threat.source_class] = threat.target_class
    return y, -1.0


def implicit_hypergradient(objective: Callable, outer: Callable, theta: torch.Tensor, x_attack: torch.Tensor,
                           free: torch.Tensor | None = None, hessian: torch.Tensor | None = None) -> torch.Tensor:
    """d outer(θ*) / d x_attack, where θ* (= `theta`, flat) minimises objective(θ, x_attack); only the coordinates
    `free` (default: all) move with x_attack. `hessian` (on the free coordinates) may be given when the learner
    has it in closed form; otherwise it comes from autograd."""
    theta = theta.detach()
    free = torch.arange(len(theta)) if free is None else free

    def full(reduced: torch.Tensor) -> torch.Tensor:
        return theta.index_put((free,), reduced)

    reduced = theta[free].clone().requires_grad_()
    (outer_grad,) = torch.autograd.grad(outer(full(reduced)), reduced)
    if hessian is None:
        v = adjoint_solve(lambda r: objective(full(r), x_attack.detach()), theta[free], outer_grad)
    else:
        v = solve_psd(hessian, outer_grad)
    x = x_attack.detach().clone().requires_grad_()
    (inner_grad,) = torch.autograd.grad(objective(full(reduced), x), reduced, create_graph=True)
    (mixed,) = torch.autograd.grad(inner_grad @ v, x)
    return -mixed


def adjoint_solve(f: Callable, at: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """H⁻¹ rhs for the Hessian H of f at `at`: a least-squares solve of the dense H (which also handles the
    null direction of over-parametrised models such as softmax intercepts), or conjugate gradients on
    Hessian-vector products when H is too large to form."""
    if len(at) <= DENSE_LIMIT:
        return solve_psd(torch.func.hessian(f)(at), rhs)
    grad = torch.func.grad(f)
    return conjugate_gradient(lambda v: torch.func.jvp(grad, (at,), (v,))[1], rhs)


def solve_psd(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix⁻¹ rhs for a symmetric positive semi-definite matrix: Cholesky when it is definite, else the
    minimum-norm least-squares solution (a null direction carries no gradient in these problems)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return torch.cholesky_solve(rhs[:, None], factor)[:, 0]
    return torch.linalg.lstsq(matrix, rhs[:, None], driver="gelsd").solution[:, 0]


def conjugate_gradient(matvec: Callable, rhs: torch.Tensor, tol: float = 1e-10, max_iter: int = 1000):
    """Solve A z = rhs for a symmetric positive (semi-)definite A given only z -> A z."""
    z = torch.zeros_like(rhs)
    r, p = rhs.clone(), rhs.clone()
    rr = r @ r
    for _ in range(max_iter):
        if rr.sqrt() <= tol * rhs.norm():
            break
        ap = matvec(p)
        step = rr / (p @ ap)
        z, r = z + step * p, r - step * ap
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return z


def projected_ascent(points: np.ndarray, evaluate: Callable, gradient: Callable, step_size: float, steps: int,
                     tol: float) -> np.ndarray:
    """Move `points` (kept in [0, 1]) up `gradient` with a backtracking line search, until no step of at least
    step_size / 64 raises `evaluate` by more than `tol`, or `steps` steps. The step is along the gradient of all
    points together (not normalised point by point, which would push points with a vanishing gradient as far
    as the others and leave the ascent direction), scaled so that the point with the largest gradient moves by
    the step length.

    evaluate(points) -> (loss, state); gradient(points, state) -> one gradient row per point.
    """
    loss, state = evaluate(points)
    step = step_size
    for _ in range(steps):
        grad = gradient(points, state)
        largest = np.linalg.norm(grad.reshape(len(grad), -1), axis=1).max()
        if largest == 0:
            break  # no attack point influences the learner (e.g. non-support vectors of an SVM)
        direction = grad / largest  # the most influential point moves `step`; the others in proportion
        while step > step_size / 64:
            candidate = np.clip(points + step * direction, 0.0, 1.0)
            new_loss, new_state = evaluate(candidate)
            if new_loss > loss + tol:
                break
            step /= 2
        else:
            break  # a local maximum along the gradient: the stopping rule
        points, loss, state = candidate, new_loss, new_state
        step = min(2 * step, step_size)
    return points


def initial_points(train: Dataset, threat: ThreatModel, g: torch.Generator, attack: str):
    """Where bilevel attack points start: clones of training samples with the attacker's labels (Biggio et al.
    2012). Class-targeted: clones of source-class samples labelled as the target class. Otherwise: clones of
    random samples with a flipped label (a random other class beyond two classes)."""
    if threat.source_class is not None:
        candidates = torch.nonzero(train.y == threat.source_class).squeeze(1)
        bases = choose_bases(candidates, threat.budget, g, f"training samples of source class {threat.source_class}")
        return bases, torch.full_like(bases, threat.target_class)
    bases = choose_bases(torch.arange(len(train)), threat.budget, g, "training samples")
    shift = torch.randint(1, threat.num_classes, (len(bases),), generator=g)
    return bases, (train.y[bases] + shift) % threat.num_classes
