"""Defenses by name: one explicit registry. Detectors score training samples (higher = more suspicious)."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from .activation_clustering import ActivationClustering
from .deep_knn import DeepKNN
from .detect import Detector, detection_metrics, removal_mask
from .dpa import DPA, VoteEnsemble, certified_accuracy, certified_radius
from .slab import Slab
from .spectral import SpectralSignatures
from .spectre import Spectre
from .sphere import Sphere

DEFENSES: dict[str, type] = {cls.name: cls for cls in (SpectralSignatures, ActivationClustering, DeepKNN, Sphere,
                                                        Slab, Spectre, DPA)}


def make_defense(name: str, **params):
    """The defense `name` with hyper-parameters `params`; unknown names and keys are errors listing valid ones."""
    if name not in DEFENSES:
        raise ConfigError(f"unknown defense {name!r}; choose one of: none, {', '.join(DEFENSES)}.")
    cls = DEFENSES[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"defense {name!r} has no parameter {', '.join(unknown)}; its parameters are: "
                          f"{', '.join(fields) or '(none)'}.")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"defense {name!r}: {exc}.") from None


__all__ = ["DEFENSES", "DPA", "ActivationClustering", "DeepKNN", "Detector", "VoteEnsemble", "certified_accuracy",
           "certified_radius", "Slab", "SpectralSignatures", "Spectre",
           "Sphere", "detection_metrics", "make_defense", "removal_mask"]
