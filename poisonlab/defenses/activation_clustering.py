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

    `rule` says what is removed: "size" (the default) is the paper's relative-size rule: in every class whose
    smaller cluster holds less than `size_threshold` of it (0.35, as IBM ART's implementation of the paper), that
    whole cluster is removed, however many samples it holds; "score" (poisonlab's) ranks the samples by that score
    and removes the top `removal` fraction (1.5× the budget by default, globally or per class: `ranking`). No rule
    holds at every budget (docs/defenses/activation-clustering.md), so the default is the paper's.

    Departure from the paper: the reduction is PCA rather than ICA (FastICA fails to converge on some classes of
    the small nets here; `reduction="ica"` is kept as an option)."""

    name = "activation-clustering"
    summary = "2-means on each class's PCA-reduced activations, small cluster flagged (Chen et al. 2018)"
    dims: int = 10
    reduction: str = "pca"
    rule: str = "size"
    size_threshold: float = 0.35

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dims < 1:
            raise ConfigError(f"activation-clustering: dims must be at least 1; got {self.dims}.")
        if self.reduction not in ("pca", "ica"):
            raise ConfigError(f"activation-clustering: reduction must be 'pca' or 'ica'; got {self.reduction!r}.")
        if self.rule not in ("score", "size"):
            raise ConfigError(f"activation-clustering: rule must be 'score' (rank by the score) or 'size' (the "
                              f"paper's: remove small clusters); got {self.rule!r}.")
        if not 0 < self.size_threshold <= 0.5:
            raise ConfigError(f"activation-clustering: size_threshold is a share of a class, in (0, 0.5]; got "
                              f"{self.size_threshold}.")
        if self.rule == "size" and self.removal is not None:
            raise ConfigError("activation-clustering: rule=size removes every small cluster whole; leave `removal` "
                              "unset, or use rule=score.")

    def clusters(self, z: torch.Tensor, y: torch.Tensor, seed: int):
        """Per class with at least 4 samples: (indices, reduced activations, 2-means labels, the small cluster)."""
        from sklearn.cluster import KMeans  # imported when used: sklearn costs seconds at start-up

        for c, idx in by_class(y):
            if len(idx) < 4:
                continue
            reduced = self.reduce(z[idx].double().numpy(), derive_seed(seed, "ac", c))
            kmeans = KMeans(2, n_init=5, random_state=derive_seed(seed, "kmeans", c) % 2**31).fit(reduced)
            small = int(np.bincount(kmeans.labels_, minlength=2).argmin())
            yield idx, reduced, kmeans, small

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        scores = torch.zeros(len(y))
        for idx, reduced, kmeans, small in self.clusters(z, y, seed):
            axis = kmeans.cluster_centers_[small] - kmeans.cluster_centers_[1 - small]
            scores[idx] = robust_z(torch.from_numpy(reduced @ axis)).float()
        return scores

    def flag(self, z: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor | None:
        """rule=size: the small cluster of every class where it holds less than `size_threshold` of the class."""
        if self.rule == "score":
            return None
        flagged = torch.zeros(len(y), dtype=torch.bool)
        for idx, _, kmeans, small in self.clusters(z, y, seed):
            members = torch.from_numpy(kmeans.labels_ == small)
            if float(members.float().mean()) < self.size_threshold:
                flagged[idx[members]] = True
        return flagged

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
