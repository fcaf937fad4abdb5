"""The sphere defense (Steinhardt et al. 2017): remove samples far from their class centroid."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .detect import Detector, by_class, robust_z


@dataclass
class Sphere(Detector):
    """Score = the distance to the sample's class centroid, robustly standardised per class (Steinhardt et al.
    2017, the sphere of the feasible set F). The paper removes points beyond a per-class radius; the standardised
    distance ranks all classes on one scale, so one removal fraction sets the radii. Centroids are the (poisoned)
    class means, as a defender without clean data would compute them."""

    name = "sphere"
    summary = "distance to the class centroid, in input or feature space (Steinhardt et al. 2017)"
    space: str = "input"

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        scores = torch.zeros(len(y))
        for _, idx in by_class(y):
            points = z[idx].double()
            scores[idx] = robust_z((points - points.mean(0)).norm(dim=1)).float()
        return scores
