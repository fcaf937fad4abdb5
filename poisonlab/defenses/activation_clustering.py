"""Activation clustering (Chen et al. 2018): 2-means on each class's reduced activations; poisons form the small
cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..seeding import derive_seed
from .detect import Detector, by_class, robust_z


@dataclass
class ActivationClustering(Detector):
    """Per class, reduce the representations to `dims` dimensions, split them by 2-means, and score each sample
    by its robust z-score along the line from the large cluster's centre to the small one's.

    Departures from the paper: the reduction is PCA rather than ICA (FastICA fails to converge on some classes of
    the small nets here; `reduction="ica"` is kept as an option), and instead of removing the whole small cluster
    of classes judged poisoned (by relative size or silhouette), the continuous score ranks samples globally so
    that a removal fraction can be set (1.5× the budget by default)."""

    name = "activation-clustering"
    summary = "2-means on each class's PCA-reduced activations, small cluster flagged (Chen et al. 2018)"
    dims: int = 10
    reduction: str = "pca"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dims < 1:
            raise ConfigError(f"activation-clustering: dims must be at least 1; got {self.dims}.")
        if self.reduction not in ("pca", "ica"):
            raise ConfigError(f"activation-clustering: reduction must be 'pca' or 'ica'; got {self.reduction!r}.")

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        from sklearn.cluster import KMeans  # imported when used: sklearn costs seconds at start-up

        scores = torch.zeros(len(y))
        for c, idx in by_class(y):
            if len(idx) < 4:
                continue
            reduced = self.reduce(z[idx].double().numpy(), derive_seed(seed, "ac", c))
            kmeans = KMeans(2, n_init=5, random_state=derive_seed(seed, "kmeans", c) % 2**31).fit(reduced)
            small = int(np.bincount(kmeans.labels_, minlength=2).argmin())
            axis = kmeans.cluster_centers_[small] - kmeans.cluster_centers_[1 - small]
            scores[idx] = robust_z(torch.from_numpy(reduced @ axis)).float()
        return scores

    def reduce(self, z: np.ndarray, seed: int) -> np.ndarray:
        centred = z - z.mean(0)
        dims = min(self.dims, *centred.shape)
        if self.reduction == "ica":
            from sklearn.decomposition import FastICA

            reduced = FastICA(dims, random_state=seed % 2**31, max_iter=500).fit_transform(centred)
            if np.isfinite(reduced).all():
                return reduced
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:dims].T
