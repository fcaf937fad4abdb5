"""Every registered attack keeps the same promises; a new attack gets these tests for free."""

import pytest
import torch

from poisonlab.attacks import ATTACKS, check_compatible, make_attack
from poisonlab.errors import ConfigError
from poisonlab.threat import PoisonSet, ThreatModel

NAMES = list(ATTACKS)


@pytest.fixture
def threat(digits):
    return ThreatModel.for_data(digits.train, 30, target_class=3)


@pytest.mark.parametrize("name", NAMES)
def test_budget_is_respected_and_indices_are_valid(name, digits, threat):
    poison = make_attack(name).craft(digits.train, threat, seed=0)
    assert len(poison) <= threat.budget
    assert len(poison) == (0 if name == "none" else threat.budget)
    if len(poison):
        assert 0 <= int(poison.indices.min()) and int(poison.indices.max()) < len(digits.train)
        assert 0.0 <= float(poison.x.min()) and float(poison.x.max()) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_eps_is_respected_or_the_attack_says_it_changes_labels(name, digits):
    threat = ThreatModel.for_data(digits.train, 30, target_class=3, eps=0.1)
    poison = make_attack(name).craft(digits.train, threat, seed=0)
    if ATTACKS[name].changes_labels:
        pytest.skip("dirty-label attacks are unbounded in their papers; the clean-label check below covers them")
    assert bool(((poison.x - digits.train.x[poison.indices]).abs() <= 0.1 + 1e-6).all())
    assert torch.equal(poison.y, digits.train.y[poison.indices])


@pytest.mark.parametrize("name", NAMES)
def test_callers_data_is_untouched(name, digits, threat):
    x, y = digits.train.x.clone(), digits.train.y.clone()
    poison = make_attack(name).craft(digits.train, threat, seed=0)
    poisoned = poison.apply(digits.train)
    assert torch.equal(digits.train.x, x) and torch.equal(digits.train.y, y)
    assert len(poisoned) == len(digits.train)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_poisons_other_seed_other_poisons(name, digits, threat):
    attack = make_attack(name)
    a, b = attack.craft(digits.train, threat, seed=4), attack.craft(digits.train, threat, seed=4)
    c = attack.craft(digits.train, threat, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.indices, b.indices) and torch.equal(a.y, b.y)
    if name != "none":
        assert not torch.equal(a.indices, c.indices)


@pytest.mark.parametrize("name", NAMES)
def test_poison_set_round_trips(name, digits, threat, tmp_path):
    poison = make_attack(name).craft(digits.train, threat, seed=0)
    loaded = PoisonSet.load(poison.save(tmp_path / name))
    assert torch.equal(loaded.apply(digits.train).x, poison.apply(digits.train).x)
    assert torch.equal(loaded.apply(digits.train).y, poison.apply(digits.train).y)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameters_are_refused(name):
    with pytest.raises(ConfigError, match="has no parameter bogus"):
        make_attack(name, bogus=1)


@pytest.mark.parametrize("name, params, message", [
    ("badnets", {"pattern": "smiley"}, "pattern='smiley' is not one of"),
    ("badnets", {"patch_size": 0}, "patch_size must be >= 1"),
    ("blended", {"alpha": 1.5}, r"alpha=1.5 must lie in \(0, 1\]"),
    ("blended", {"pattern": "image"}, "needs image="),
    ("label-flip", {"to": "nowhere"}, "to='nowhere' is not one of"),
])
def test_bad_parameter_values_are_refused(name, params, message):
    with pytest.raises(ConfigError, match=message):
        make_attack(name, **params)


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS[n].changes_labels])
def test_label_changing_attacks_are_refused_under_a_clean_label_threat(name, digits):
    threat = ThreatModel.for_data(digits.train, 10, target_class=3, clean_label=True)
    with pytest.raises(ConfigError, match="clean-label"):
        check_compatible(make_attack(name), threat)


def test_a_backdoor_without_a_target_class_says_how_to_give_one(digits):
    threat = ThreatModel.for_data(digits.train, 10)
    with pytest.raises(ConfigError, match="--target-class"):
        make_attack("badnets").craft(digits.train, threat)


def test_unknown_attack_lists_the_valid_names():
    with pytest.raises(ConfigError, match="none, label-flip, badnets, blended"):
        make_attack("poison-frogs-typo")
