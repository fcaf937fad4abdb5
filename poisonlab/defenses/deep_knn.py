"""Deep k-NN (Peri et al. 2020): a sample whose label disagrees with its nearest neighbours in feature space."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .detect import Detector


@dataclass
class DeepKNN(Detector):
    """Score = the share of a sample's k nearest training neighbours (Euclidean, in the representation) whose
    label differs from its own; Peri et al. remove a sample whose label is not the plurality of its neighbours.
    Ties are broken by the mean distance to the same-label neighbours (farther = more suspicious)."""

    name = "deep-knn"
    summary = "label disagreement with the k nearest neighbours in feature space (Peri et al. 2020)"
    k: int = 50
    batch_size: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ConfigError(f"deep-knn: k must be at least 1; got {self.k}.")

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        k = min(self.k, len(y) - 1)
        z = z.float()
        scores = torch.empty(len(y))
        for rows in torch.arange(len(y)).split(self.batch_size):
            distances = torch.cdist(z[rows], z)
            distances[torch.arange(len(rows)), rows] = float("inf")  # not its own neighbour
            nearest, neighbours = distances.topk(k, largest=False)
            disagree = (y[neighbours] != y[rows, None]).float()
            same = (1 - disagree)
            spread = (nearest * same).sum(1) / same.sum(1).clamp_min(1)
            scores[rows] = disagree.mean(1) + 1e-3 * spread / (1 + spread)
        return scores
