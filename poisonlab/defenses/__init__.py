"""Defenses by name: one explicit registry. Detectors score training samples (higher = more suspicious)."""

from __future__ import annotations

from ..registry import build
from .activation_clustering import ActivationClustering
from .adversarial_poisoning import AdversarialPoisoning
from .deep_knn import DeepKNN
from .detect import Detector, detection_metrics, removal_mask
from .dp_sgd import DPSGD
from .dpa import DPA, VoteEnsemble, certified_accuracy, certified_radius
from .neural_cleanse import Inspection, NeuralCleanse
from .slab import Slab
from .spectral import SpectralSignatures
from .spectre import Spectre
from .sphere import Sphere
from .strip import STRIP, RejectingClassifier

DEFENSES: dict[str, type] = {cls.name: cls for cls in (SpectralSignatures, ActivationClustering, DeepKNN, Sphere,
                                                        Slab, Spectre, NeuralCleanse, STRIP, DPSGD,
                                                        AdversarialPoisoning, DPA)}


def make_defense(name: str, **params):
    """The defense `name` with hyper-parameters `params`; unknown names and keys are errors listing valid ones."""
    return build("defense", DEFENSES, name, params, extra_names=("none",))


__all__ = ["DEFENSES", "DPA", "DPSGD", "STRIP", "ActivationClustering", "AdversarialPoisoning", "DeepKNN", "Detector",
           "Inspection", "NeuralCleanse", "RejectingClassifier", "Slab", "SpectralSignatures", "Spectre", "Sphere",
           "VoteEnsemble", "certified_accuracy", "certified_radius", "detection_metrics", "make_defense",
           "removal_mask"]
