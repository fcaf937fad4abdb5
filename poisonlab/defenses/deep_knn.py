"""Deep k-NN (Peri et al. 2020): a sample whose label disagrees with its nearest neighbours in feature space."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .detect import Detector


@dataclass
class DeepKNN(Detector):
    """Score = the share of a sample's k nearest training neighbours (Euclidean, in the representation) whose
    label differs from its own, ties broken by the mean distance to the same-label neighbours (farther = more
    suspicious). `rule="plurality"` (the default) removes what Peri et al.'s code removes: every sample whose label
    is not the plurality of its k nearest neighbours, itself included (k = 101, theirs), however many that is.
    `rule="top"` (poisonlab's) removes the top `removal` fraction by score instead. Neither stops a dirty-label
    backdoor (docs/defenses/deep-knn.md); the default is the paper's."""

    name = "deep-knn"
    summary = "label disagreement with the k nearest neighbours in feature space (Peri et al. 2020)"
    k: int = 101
    rule: str = "plurality"
    batch_size: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ConfigError(f"deep-knn: k must be at least 1; got {self.k}.")
        if self.rule not in ("top", "plurality"):
            raise ConfigError(f"deep-knn: rule must be 'top' (remove the top `removal` fraction) or 'plurality' "
                              f"(Peri et al.'s vote); got {self.rule!r}.")
        if self.rule == "plurality" and self.removal is not None:
            raise ConfigError("deep-knn: rule=plurality removes every sample its neighbours outvote; leave "
                              "`removal` unset, or use rule=top.")

    def neighbours(self, z: torch.Tensor, k: int):
        """(rows, distances, indices) of each row's k nearest other samples, in blocks of `batch_size` rows."""
        z = z.float()
        for rows in torch.arange(len(z)).split(self.batch_size):
            distances = torch.cdist(z[rows], z)
            distances[torch.arange(len(rows)), rows] = float("inf")  # not its own neighbour
            yield rows, *distances.topk(min(k, len(z) - 1), largest=False)

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        scores = torch.empty(len(y))
        for rows, nearest, neighbours in self.neighbours(z, self.k):
            disagree = (y[neighbours] != y[rows, None]).float()
            same = (1 - disagree)
            spread = (nearest * same).sum(1) / same.sum(1).clamp_min(1)
            scores[rows] = disagree.mean(1) + 1e-3 * spread / (1 + spread)
        return scores

    def flag(self, z: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor | None:
        """rule=plurality: the samples whose label loses the vote of their k nearest neighbours (themselves one of
        them; a tie goes to the smallest class index, as in scikit-learn's k-NN classifier)."""
        if self.rule == "top":
            return None
        classes = int(y.max()) + 1
        flagged = torch.empty(len(y), dtype=torch.bool)
        for rows, _, neighbours in self.neighbours(z, self.k - 1):
            voters = torch.cat([rows[:, None], neighbours], 1)
            votes = torch.zeros(len(rows), classes).scatter_add_(1, y[voters], torch.ones(voters.shape))
            flagged[rows] = votes.argmax(1) != y[rows]
        return flagged
