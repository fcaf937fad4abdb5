"""Spectral signatures (Tran et al. 2018): poisons stand out along the top singular direction of their class."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .detect import Detector, by_class, robust_z


@dataclass
class SpectralSignatures(Detector):
    """Per class, centre the representations, take the top right singular vector v (Tran et al. 2018, Alg. 1)
    and score each sample along it.

    The paper's rule is the default: `ranking="per-class"` removes the top 1.5× budget (or `removal`) of every
    class by the squared projection (`statistic="squared"`). `ranking="global"` is poisonlab's variant: the
    projection is robustly standardised per class (`statistic="robust-z"`: median / MAD) so that one ranking of
    the whole training set removes 1.5× the budget in all. `statistic="auto"` pairs each ranking with its own;
    either statistic can be set with either ranking. Neither rule holds at every budget
    (docs/defenses/spectral-signatures.md measures both at 1%, 5% and 10%)."""

    name = "spectral-signatures"
    summary = "top singular direction of each class's representations (Tran et al. 2018)"
    ranking: str = "per-class"
    statistic: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.statistic not in ("auto", "squared", "robust-z"):
            raise ConfigError(f"spectral-signatures: statistic must be 'squared' (the paper's), 'robust-z' or 'auto' "
                              f"(squared per class, robust-z globally); got {self.statistic!r}.")

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        squared = self.statistic == "squared" or (self.statistic == "auto" and self.ranking == "per-class")
        scores = torch.zeros(len(y))
        for _, idx in by_class(y):
            if len(idx) < 3:
                continue
            centred = z[idx].double() - z[idx].double().mean(0)
            top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            projection = centred @ top
            scores[idx] = (projection.square() if squared else robust_z(projection).abs()).float()
        return scores
