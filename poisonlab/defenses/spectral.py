"""Spectral signatures (Tran et al. 2018): poisons stand out along the top singular direction of their class."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .detect import Detector, by_class, robust_z


@dataclass
class SpectralSignatures(Detector):
    """Per class, centre the representations, take the top right singular vector v (Tran et al. 2018, Alg. 1)
    and score each sample by its distance from the class along v.

    Departure from the paper: the paper scores the squared projection and removes 1.5ε from every class; here
    the projection is robustly standardised per class (median / MAD, `robust_z`), so one global ranking removes
    1.5× the budget in all, wherever the poisons sit. A large poison share in one class (an all-to-one backdoor
    puts all its poisons in the target class) makes the mean-centred squared score of a poison no larger than a
    clean tail's, while its robust z-score grows with the separation."""

    name = "spectral-signatures"
    summary = "top singular direction of each class's representations, robust z-score (Tran et al. 2018)"

    def score_representation(self, z: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        scores = torch.zeros(len(y))
        for _, idx in by_class(y):
            if len(idx) < 3:
                continue
            centred = z[idx].double() - z[idx].double().mean(0)
            top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            scores[idx] = robust_z(centred @ top).abs().float()
        return scores
