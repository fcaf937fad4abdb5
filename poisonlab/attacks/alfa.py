"""ALFA, adversarial label flipping against SVMs (Xiao, Xiao, Eckert, ECAI 2012)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from ..data import Dataset
from ..errors import ConfigError
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .base import Attack
from .svm_kkt import KernelSVM


@dataclass(frozen=True)
class ALFA(Attack):
    """Choose the `budget` labels to flip that most hurt a linear SVM, by alternating two steps: train the SVM on
    the currently tainted labels, then pick the flips that minimise Σ q_i (ξ_i - ψ_i), where ξ is the tainted
    SVM's hinge loss and ψ the clean SVM's, on each point under its kept or flipped label.

    With one "kept or flipped" choice per point and at most `budget` flips, that linear program is solved
    exactly by taking the `budget` points whose flip lowers the objective most; the paper hands it to an LP solver.
    The alternation starts from seeded random losses (against the clean SVM every flip would tie).
    """

    name: ClassVar[str] = "alfa"
    summary: ClassVar[str] = "Xiao et al. 2012: adversarial label flips against a linear SVM (alternating LP)"
    pursues: ClassVar[str] = "availability"

    C: float = 1.0
    iterations: int = 10

    def __post_init__(self) -> None:
        if self.C <= 0 or self.iterations < 1:
            raise ConfigError(f"alfa needs C > 0 and iterations >= 1; got C={self.C}, iterations={self.iterations}.")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate=None, seed: int = 0,
              validation: Dataset | None = None) -> PoisonSet:
        if threat.num_classes != 2:
            raise ConfigError(f"alfa flips labels of a binary task; the data has {threat.num_classes} classes. Pick "
                              "two with --classes A,B.")
        x = train.x.flatten(1).double().numpy()
        y = train.y.double().numpy() * 2 - 1
        svm = KernelSVM("linear", self.C, 0.0)
        gram = svm.kernel(x, x)
        psi = self.hinge(svm, gram, x, y, y)  # the clean SVM's loss on each point, kept and flipped labels
        # against the clean SVM every flip would tie, so the first "tainted" losses are seeded uniform noise
        xi = torch.rand(2, len(y), generator=generator(seed, self.name), dtype=torch.float64).numpy()
        flips = np.zeros(len(y), dtype=bool)
        for _ in range(self.iterations):
            gain = (xi[1] - psi[1]) - (xi[0] - psi[0])  # objective change when point i is flipped
            order = np.argsort(gain, kind="stable")[:threat.budget]
            new = np.zeros_like(flips)
            new[order] = True
            if (new == flips).all():
                break
            flips = new
            xi = self.hinge(svm, gram, x, np.where(flips, -y, y), y)
        indices = torch.from_numpy(np.flatnonzero(flips)).long()
        return PoisonSet(indices, train.x[indices].clone(), 1 - train.y[indices], threat.num_classes, self.name,
                         params=asdict(self))

    @staticmethod
    def hinge(svm: KernelSVM, gram: np.ndarray, x, labels, y) -> np.ndarray:
        """Hinge losses (2 × n) of the SVM trained on (x, labels), for each point under its label y and under -y."""
        alpha, b = svm.fit(x, labels, gram)
        f = gram @ (alpha * labels) + b
        return np.stack([np.maximum(0, 1 - y * f), np.maximum(0, 1 + y * f)])
