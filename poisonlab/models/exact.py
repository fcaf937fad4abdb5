"""Exact training of the linear models: the convex problem solved to optimality by libsvm / lbfgs.

Bilevel attacks differentiate through the optimum of the inner problem, so their victims must reach it:
`linear-svm` is libsvm's C-SVM with a linear kernel (one-vs-rest LinearSVC with the hinge loss beyond two
classes), `logistic` is L2-regularised logistic regression (lbfgs, multinomial). The solution is written into the
model's head, so the result is an ordinary poisonlab model.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC, LinearSVC

from ..data import Dataset
from ..errors import ConfigError
from .architectures import Classifier


def fit_exact(model: Classifier, dataset: Dataset, C: float) -> Classifier:
    if not isinstance(model.extractor, torch.nn.Flatten):
        raise ConfigError("optimizer 'exact' trains the linear models (logistic, linear-svm) only; use adam or sgd "
                          "for this model.")
    x = dataset.x.flatten(1).double().numpy()
    y = dataset.y.numpy()
    if len(np.unique(y)) < 2:
        raise ConfigError("exact training needs samples of at least two classes.")
    binary = model.head.out_features == 2
    if model.loss == "hinge":
        solver = SVC(kernel="linear", C=C, tol=1e-8) if binary else LinearSVC(C=C, loss="hinge", max_iter=100_000)
    else:
        solver = LogisticRegression(C=C, tol=1e-10, max_iter=10_000)
    solver.fit(x, y)
    weight, bias = np.asarray(solver.coef_, dtype=np.float64), np.asarray(solver.intercept_, dtype=np.float64)
    if binary:  # one decision function f: logits (-f/2, f/2) predict class 1 exactly when f > 0
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    return model.eval()
