"""Every registered defense keeps the same promises through its one verb, `defend(context)`; a new defense gets
these tests for free (its effect test is its own, in test_defenses.py)."""

import dataclasses

import pytest
import torch

from poisonlab import ThreatModel, build_model, make_attack, train
from poisonlab.defenses import DEFENSES, Counts, Defended, Defense, DefenseContext, make_defense
from poisonlab.errors import ConfigError
from poisonlab.models import TrainRecipe, predict

NAMES = list(DEFENSES)
FAST = {"neural-cleanse": {"steps": 30, "unlearn_epochs": 1}, "dpa": {"partitions": 3}, "strip": {"overlays": 4},
        "adversarial-poisoning": {"steps": 1}}
RECIPE = TrainRecipe(epochs=2, batch_size=64, lr=0.01)
BAD = {"spectral-signatures": {"removal": 1.5}, "activation-clustering": {"reduction": "tsne"},
       "deep-knn": {"k": 0}, "sphere": {"space": "pixels"}, "slab": {"removal": 0},
       "spectre": {"support_fraction": 0.3}, "neural-cleanse": {"rule": "vote"}, "strip": {"overlays": 0},
       "dp-sgd": {"max_grad_norm": 0}, "adversarial-poisoning": {"poison_fraction": 0.9}, "dpa": {"partitions": 0}}


@pytest.fixture(scope="module")
def trial(digits):
    """A tiny poisoned training set (digits 0-2, BadNets 5% to class 2), an MLP victim and its control."""
    data = digits.subset(classes=[0, 1, 2], train_size=300, test_size=90, seed=0)
    threat = ThreatModel.for_data(data.train, 0.05, target_class=2)
    poison = make_attack("badnets", patch_size=2, margin=0).craft(data.train, threat, seed=0)
    poisoned = poison.apply(data.train)

    def build():
        return build_model("mlp", data.train.shape, 3, seed=0)

    victim, control = (train(build(), d, RECIPE, seed=0) for d in (poisoned, data.train))
    eligible = data.test.y != 2
    return dict(poisoned=poisoned, victim=victim, build=build, recipe=RECIPE, seed=0, budget=threat.budget,
                test=data.test, is_poison=poison.is_poison(poisoned), clean_train=data.train, control=control,
                attack_inputs=poison.trigger.apply(data.test.x[eligible]), target_class=2)


def defend(name, trial, seed=0):
    context = DefenseContext.from_scratch(**{**trial, "seed": seed})
    return make_defense(name, **FAST.get(name, {})).defend(context)


@pytest.mark.parametrize("name", NAMES)
def test_every_defense_returns_a_model_that_predicts_and_counts_of_its_declared_type(name, trial):
    defense = make_defense(name, **FAST.get(name, {}))
    assert isinstance(defense, Defense) and defense.name == name and defense.summary
    defended = defend(name, trial)
    assert isinstance(defended, Defended)
    predictions = predict(defended.model, trial["test"].x)
    assert predictions.shape == (len(trial["test"]),) and predictions.dtype == torch.long
    counts = defended.counts
    assert type(counts) is defense.Counts and issubclass(defense.Counts, Counts)
    stored = dataclasses.asdict(counts)
    assert defense.Counts(**stored) == counts  # counts round-trip through a stored row
    summary = defense.Counts.summarise([counts, counts])
    assert isinstance(summary, dict) and isinstance(defense.Counts.describe(summary), str)


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_defended_victim_and_counts(name, trial):
    first, again = defend(name, trial), defend(name, trial)
    assert first.counts == again.counts
    assert torch.equal(predict(first.model, trial["test"].x), predict(again.model, trial["test"].x))


@pytest.mark.parametrize("name", NAMES)
def test_bad_and_unknown_parameters_raise(name):
    with pytest.raises(ConfigError):
        make_defense(name, **BAD[name])
    with pytest.raises(ConfigError, match="has no parameter"):
        make_defense(name, bogus=1)


def test_every_defense_has_a_bad_parameter_case_here():
    assert set(BAD) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_defense_says_which_training_settings_it_applies_to(name):
    defense = make_defense(name)
    assert set(defense.settings) <= {"frozen", "finetune", "scratch"} and "scratch" in defense.settings
    for setting in {"frozen", "finetune"} - set(defense.settings):
        with pytest.raises(ConfigError, match="from scratch"):
            defense.check(setting)
