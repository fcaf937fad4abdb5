"""The slab defense (Steinhardt et al. 2017): remove samples far from their centroid along the line between
centroids."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .detect import Detector, by_class, robust_z


@dataclass
class Slab(Detector):
    """Score = |⟨x − μ_y, μ_y − μ⟩| / ||μ_y − μ||, robustly standardised per class (Steinhardt et al. 2017, the
    slab of F). For two classes μ_y − μ is parallel to μ_1 − μ_0, the paper's direction; with more classes each
    class uses the line from the overall mean μ to its centroid (our generalisation)."""

    name = "slab"
    summary = "distance from the centroid along the between-centroid line (Steinhardt et al. 2017)"
    space: str = "input"

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        z = z.double()
        overall = z.mean(0)
        scores = torch.zeros(len(y))
        for _, idx in by_class(y):
            centroid = z[idx].mean(0)
            direction = centroid - overall
            direction = direction / direction.norm().clamp_min(1e-12)
            scores[idx] = robust_z(((z[idx] - centroid) @ direction).abs()).float()
        return scores
