"""poisonlab: training-data poisoning attacks, defenses and benchmarks.

The public API: load a data set, build and train models, state a threat model, craft poisons, measure.
"""

from . import attacks, defenses
from .attacks import ATTACKS, make_attack
from .bench.scenario import Scenario
from .data import Dataset, Splits, load_dataset
from .errors import ConfigError, DataError, PoisonlabError
from .metrics import attack_success_rate, clean_accuracy, test_error, wilson_interval
from .models import TrainRecipe, build_model, evaluate, predict, train
from .threat import PoisonSet, ThreatModel, Trigger

__version__ = "0.1.0"

__all__ = ["ATTACKS", "ConfigError", "DataError", "Dataset", "PoisonSet", "PoisonlabError", "Scenario", "Splits",
           "ThreatModel", "TrainRecipe", "Trigger", "attack_success_rate", "attacks", "build_model",
           "clean_accuracy", "defenses", "evaluate", "load_dataset", "make_attack", "predict", "test_error", "train",
           "wilson_interval"]
