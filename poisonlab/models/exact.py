"""Exact training of the linear models: the convex problem solved to optimality by libsvm / lbfgs / coordinate
descent.

Bilevel attacks differentiate through the optimum of the inner problem, so their victims must reach it. Every
model minimises C · Σ_i loss_i + penalty(W) (the intercept is not penalised):

- `linear-svm`: hinge loss, ½||W||² (libsvm's C-SVM; one-vs-rest LinearSVC beyond two classes);
- `logistic`: cross-entropy, ½||W||² (lbfgs; multinomial beyond two classes);
- `ridge`: ½ squared error to ±1 codes (one-vs-rest beyond two classes), ½||W||²;
- `lasso`: ½ squared error to ±1 codes, ||W||₁ (coordinate descent).

With two classes a model has one decision function f (class 1 when f > 0), written into the head as the logits
(-f/2, f/2), so the result is an ordinary poisonlab model.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import Dataset
from ..errors import ConfigError
from .architectures import Classifier


def targets(y: np.ndarray, num_classes: int) -> np.ndarray:
    """The ±1 regression codes of labels y: one column (2y - 1) for two classes, one-vs-rest beyond."""
    if num_classes == 2:
        return 2.0 * y - 1.0
    return 2.0 * np.eye(num_classes)[y] - 1.0


def solve(loss: str, x: np.ndarray, y: np.ndarray, num_classes: int, C: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of the optimum: W is (outputs × features), one output for two classes, else one per class."""
    from sklearn.linear_model import Lasso, LogisticRegression, Ridge  # imported when used (slow to import)
    from sklearn.svm import SVC, LinearSVC

    if len(np.unique(y)) < 2:
        raise ConfigError("exact training needs samples of at least two classes.")
    binary = num_classes == 2
    if loss == "hinge":
        solver = SVC(kernel="linear", C=C, tol=1e-8) if binary else LinearSVC(C=C, loss="hinge", max_iter=100_000)
    elif loss == "cross-entropy":
        solver = LogisticRegression(C=C, tol=1e-10, max_iter=10_000)
    elif loss == "squared":
        solver = Ridge(alpha=1.0 / C, solver="cholesky")
    else:  # "squared-l1"
        solver = Lasso(alpha=1.0 / (C * len(y)), tol=1e-10, max_iter=100_000)
    codes = targets(y, num_classes) if loss.startswith("squared") else y
    solver.fit(x, codes)
    weight = np.asarray(solver.coef_, dtype=np.float64).reshape(-1, x.shape[1])
    bias = np.asarray(solver.intercept_, dtype=np.float64).reshape(-1)
    if not binary and len(weight) == 1:  # only two of the classes are present in this training set
        raise ConfigError(f"exact training of a {num_classes}-class model needs samples of every class.")
    return weight, bias


def fit_exact(model: Classifier, dataset: Dataset, C: float) -> Classifier:
    if not isinstance(model.extractor, torch.nn.Flatten):
        raise ConfigError("optimizer 'exact' trains the linear models (logistic, linear-svm, ridge, lasso) only; "
                          "use adam or sgd for this model.")
    num_classes = model.head.out_features
    weight, bias = solve(model.loss, dataset.x.flatten(1).double().numpy(), dataset.y.numpy(), num_classes, C)
    if num_classes == 2:
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    return model.eval()
