"""Defenses by name: one explicit registry. Every defense has one verb, `defend(context) -> Defended`
(defenses/base.py); detectors also `score` training samples (higher = more suspicious)."""

from __future__ import annotations

from ..registry import build
from .activation_clustering import ActivationClustering
from .adversarial_poisoning import AdversarialPoisoning
from .base import Counts, Defended, Defense, DefenseContext, NoCounts
from .deep_knn import DeepKNN
from .detect import DetectionCounts, Detector, detection_counts, removal_mask
from .dp_sgd import DPSGD, PrivacyCounts
from .dpa import DPA, CertificateCounts, VoteEnsemble, certified_accuracy, certified_radius
from .neural_cleanse import Inspection, InspectionCounts, NeuralCleanse
from .slab import Slab
from .spectral import SpectralSignatures
from .spectre import Spectre
from .sphere import Sphere
from .strip import STRIP, RejectingClassifier, RejectionCounts

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (SpectralSignatures, ActivationClustering, DeepKNN, Sphere, Slab, Spectre, NeuralCleanse,
                              STRIP, DPSGD, AdversarialPoisoning, DPA)}


def make_defense(name: str, **params) -> Defense:
    """The defense `name` with hyper-parameters `params`; unknown names and keys are errors listing valid ones."""
    return build("defense", DEFENSES, name, params, extra_names=("none",))


__all__ = ["DEFENSES", "DPA", "DPSGD", "STRIP", "ActivationClustering", "AdversarialPoisoning", "CertificateCounts",
           "Counts", "DeepKNN", "Defended", "Defense", "DefenseContext", "DetectionCounts", "Detector", "Inspection",
           "InspectionCounts", "NeuralCleanse", "NoCounts", "PrivacyCounts", "RejectingClassifier", "RejectionCounts",
           "Slab", "SpectralSignatures", "Spectre", "Sphere", "VoteEnsemble", "certified_accuracy", "certified_radius",
           "detection_counts", "make_defense", "removal_mask"]
