"""Every registered attack keeps the same promises; a new attack gets these tests for free."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import poisonlab
from poisonlab.attacks import ATTACKS, THREAT_FIELDS, Attack, check_compatible, make_attack
from poisonlab.errors import ConfigError
from poisonlab.models import build_model
from poisonlab.threat import PoisonSet, ThreatModel

NAMES = list(ATTACKS)
FAST = {"svm-kkt": {"steps": 5}, "bilevel-linear": {"steps": 3},  # keep each call under a second;
        "back-gradient": {"steps": 2, "train_steps": 10},  # the effect tests use the defaults
        "feature-collision": {"steps": 5}, "convex-polytope": {"steps": 5}, "bullseye-polytope": {"steps": 5},
        "witches-brew": {"steps": 3}, "metapoison": {"steps": 2, "stages": 2, "stage_epochs": 1, "batch_size": 16},
        "hidden-trigger": {"steps": 5, "patch_size": 2, "margin": 1}, "clean-label-backdoor": {"steps": 3},
        "sleeper-agent": {"steps": 3, "patch_size": 2}}


def make(name, **params):
    return make_attack(name, **{**FAST.get(name, {}), **params})


@pytest.fixture(scope="module")
def task(digits):
    """A small binary task (3 vs 8) with an attacker's validation set, which suits every attack."""
    return digits.subset(classes=[3, 8], train_size=120, val_size=60, seed=0)


@pytest.fixture
def threat(task):
    """Backdoors read the target class; targeted attacks also the target image (a validation image of class 0)."""
    return ThreatModel.for_data(task.train, 6, target_class=1, target_image=target_image(task))


def target_image(task):
    return task.val.x[task.val.y == 0][:1]


@pytest.fixture(scope="module")
def surrogate(task):
    """The network feature-space attacks craft against (untrained: the contract does not depend on it)."""
    return build_model("convnet", task.train.shape, 2, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_budget_is_respected_and_indices_are_valid(name, task, threat, surrogate):
    poison = make(name).craft(task.train, threat, surrogate, seed=0, validation=task.val)
    assert len(poison) <= threat.budget
    assert len(poison) == (0 if name == "none" else threat.budget)
    if len(poison):
        assert 0 <= int(poison.indices.min()) and int(poison.indices.max()) < len(task.train)
        assert 0.0 <= float(poison.x.min()) and float(poison.x.max()) <= 1.0


@pytest.mark.parametrize("name", [n for n in NAMES if "eps" in make(n).threat_fields() and n != "none"])
def test_attacks_that_read_eps_respect_it_and_clean_label_ones_keep_labels(name, task, surrogate):
    threat = ThreatModel.for_data(task.train, 6, target_class=1, eps=0.1, target_image=target_image(task))
    poison = make(name).craft(task.train, threat, surrogate, seed=0, validation=task.val)
    change = (poison.x - task.train.x[poison.indices]).abs()
    if poison.params.get("variant") == "turner":  # Turner's clean-label backdoor stamps its trigger past the box
        change = change * (poison.trigger.mask == 0)
    assert bool((change <= 0.1 + 1e-6).all())
    assert not ATTACKS[name].changes_labels and torch.equal(poison.y, task.train.y[poison.indices])


@pytest.mark.parametrize("name", NAMES)
def test_every_attack_follows_the_protocol_and_declares_what_it_reads(name):
    attack = make(name)
    assert isinstance(attack, Attack) and attack.name == name and attack.summary
    assert attack.needs in ("nothing", "features", "gradients")
    assert attack.threat_fields() <= set(THREAT_FIELDS)
    assert not attack.targeted or attack.needs != "nothing"  # a targeted attack crafts on a network
    assert not attack.augments_like_victim or "augment" in {f.name for f in dataclasses.fields(attack)}


def test_the_attack_protocol_names_every_attribute_the_runner_reads():
    """bench/ asks an attack for its declarations and verbs only; each is declared on `Attack`."""
    read = set()
    for path in (Path(poisonlab.__file__).parent / "bench").glob("*.py"):
        read |= set(re.findall(r"\battack\.(\w+)", path.read_text()))
    assert read and read <= {n for n in dir(Attack) if not n.startswith("_")} | {"name", "summary"}, read


@pytest.mark.parametrize("name", NAMES)
def test_callers_data_is_untouched(name, task, threat, surrogate):
    x, y = task.train.x.clone(), task.train.y.clone()
    poison = make(name).craft(task.train, threat, surrogate, seed=0, validation=task.val)
    poisoned = poison.apply(task.train)
    assert torch.equal(task.train.x, x) and torch.equal(task.train.y, y)
    assert len(poisoned) == len(task.train) + (len(poison) if poison.insertion == "add" else 0)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_poisons_other_seed_other_poisons(name, task, threat, surrogate):
    attack = make(name)
    a, b = (attack.craft(task.train, threat, surrogate, seed=4, validation=task.val) for _ in range(2))
    c = attack.craft(task.train, threat, surrogate, seed=5, validation=task.val)
    assert torch.equal(a.x, b.x) and torch.equal(a.indices, b.indices) and torch.equal(a.y, b.y)
    if name == "sleeper-agent":  # it perturbs the target-class images of largest gradient norm, whatever the seed
        assert not torch.equal(a.x, c.x)
    elif name != "none":
        assert not torch.equal(a.indices, c.indices)


@pytest.mark.parametrize("name", NAMES)
def test_poison_set_round_trips(name, task, threat, surrogate, tmp_path):
    poison = make(name).craft(task.train, threat, surrogate, seed=0, validation=task.val)
    loaded = PoisonSet.load(poison.save(tmp_path / name))
    assert torch.equal(loaded.apply(task.train).x, poison.apply(task.train).x)
    assert torch.equal(loaded.apply(task.train).y, poison.apply(task.train).y)


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
    ("svm-kkt", {"kernel": "poly"}, "kernel='poly' is not one of"),
    ("svm-kkt", {"C": 0}, "C > 0"),
    ("feature-collision", {"opacity": 1.0}, "opacity in"),
    ("convex-polytope", {"layers": "first"}, "layers='first' is not one of"),
    ("convex-polytope", {"dropout": 1.0}, "dropout in"),
    ("feature-collision", {"method": "sgd"}, "method='sgd' is not one of"),
    ("bullseye-polytope", {"steps": 0}, "steps >= 1"),
    ("hidden-trigger", {"placement": "anywhere"}, "placement='anywhere' is not one of"),
    ("hidden-trigger", {"decay": 0}, r"decay in \(0, 1\]"),
    ("clean-label-backdoor", {"variant": "madry"}, "variant='madry' is not one of"),
    ("clean-label-backdoor", {"amplitude": 0}, r"amplitude in \(0, 1\]"),
    ("sleeper-agent", {"selection": "max-loss"}, "selection='max-loss' is not one of"),
    ("sleeper-agent", {"retrain_every": -1}, "retrain_every, retrain_epochs and sources >= 0"),
    ("sleeper-agent", {"recipe": {"epochs": 0}}, "epochs"),
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


def test_bilevel_attacks_say_what_data_they_need(digits, task):
    with pytest.raises(ConfigError, match="binary SVM.*--classes"):
        make("svm-kkt").craft(digits.train, ThreatModel.for_data(digits.train, 3), validation=digits.test)
    with pytest.raises(ConfigError, match="--val-size"):
        check_compatible(make("svm-kkt"), ThreatModel.for_data(task.train, 3))


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS[n].targeted  # those that may take a target image
                                  and ATTACKS[n].single_target is Attack.single_target])
def test_targeted_attacks_say_they_need_a_target_image_and_a_surrogate(name, task, surrogate):
    with pytest.raises(ConfigError, match="target image"):
        make(name).craft(task.train, ThreatModel.for_data(task.train, 3, target_class=1), surrogate)
    with pytest.raises(ConfigError, match="surrogate"):
        make(name).craft(task.train, ThreatModel.for_data(task.train, 3, target_class=1,
                                                          target_image=target_image(task)))


def test_unknown_attack_lists_the_valid_names():
    with pytest.raises(ConfigError, match="none, label-flip, alfa, badnets, blended, svm-kkt"):
        make_attack("poison-frogs-typo")


@pytest.mark.parametrize("name", ["svm-kkt", "bilevel-linear", "back-gradient"])
def test_bilevel_attacks_in_class_targeted_mode_clone_the_source_class_with_the_target_label(name, task, surrogate):
    threat = ThreatModel.for_data(task.train, 4, target_class=1, source_class=0)
    poison = make(name).craft(task.train, threat, surrogate, seed=0, validation=task.val)
    assert bool((task.train.y[poison.indices] == 0).all()) and bool((poison.y == 1).all())
    assert (poison.source_class, poison.target_class) == (0, 1)


GROUPED = [n for n in NAMES if ATTACKS[n].crafts_together]


@pytest.mark.parametrize("name", GROUPED)
def test_trials_crafted_together_get_the_poisons_they_get_alone(name, task, surrogate):
    """craft_group shares the passes of several trials (other targets, classes and seeds) in one optimisation;
    each trial's poisons, labels, bases and parameters are those `craft` gives it on its own."""
    ensemble = [surrogate, build_model("convnet", task.train.shape, 2, seed=1)]
    attack = make(name, steps=10)
    threats = [ThreatModel.for_data(task.train, 4, target_class=c, target_image=task.val.x[task.val.y != c][i:i + 1],
                                    eps=8 / 255) for i, c in enumerate((1, 0, 1))]
    seeds = [3, 4, 5]
    together = attack.craft_group(task.train, threats, ensemble, seeds)
    for threat, seed, grouped in zip(threats, seeds, together, strict=True):
        alone = attack.craft(task.train, threat, ensemble, seed=seed)
        assert torch.equal(grouped.indices, alone.indices) and torch.equal(grouped.y, alone.y)
        assert torch.allclose(grouped.x, alone.x, atol=1e-6)
        assert grouped.target_class == alone.target_class
        assert grouped.params.keys() == alone.params.keys()
    assert not torch.allclose(together[0].x, together[2].x[: len(together[0].x)])  # the trials differ
    with pytest.raises(ConfigError, match="share eps"):
        attack.craft_group(task.train, [threats[0], ThreatModel.for_data(task.train, 4, target_class=1, eps=0.1,
                                                                        target_image=threats[0].target_image)],
                           ensemble, [0, 1])


# Blocks before the penultimate features that layers="all" matches, per architecture and image shape: each
# conv or residual block and each stem once, the last block before global pooling counted as the features.
LAYER_COUNTS = [("logistic", (1, 8, 8), [64]), ("linear-svm", (1, 8, 8), [64]), ("ridge", (1, 8, 8), [64]),
                ("lasso", (1, 8, 8), [64]), ("mlp", (1, 28, 28), [256, 128]),
                ("convnet", (1, 8, 8), [32, 64, 128]), ("convnet", (1, 28, 28), [32, 64, 128]),
                ("convnet", (3, 32, 32), [32, 64, 128, 256]), ("convnet-wide", (3, 32, 32), [64, 128, 256]),
                ("resnet8", (1, 28, 28), [32, 32, 64, 128]),
                ("resnet18", (3, 32, 32), [64, 64, 64, 128, 128, 256, 256, 512, 512]),
                ("mobilenet-v2", (3, 32, 32), [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160,
                                               320, 1280]),
                ("vgg11", (3, 32, 32), [64, 128, 256, 256, 512, 512, 512, 512])]


@pytest.mark.parametrize(("name", "shape", "widths"), LAYER_COUNTS, ids=[f"{n}-{s[1]}" for n, s, _ in LAYER_COUNTS])
def test_all_layers_counts_each_block_once_and_ends_at_the_features(name, shape, widths):
    from poisonlab.attacks.feature_space import layer_features
    from poisonlab.models import MODELS, build_model

    assert {n for n, _, _ in LAYER_COUNTS} == set(MODELS)  # every architecture is counted
    model = build_model(name, shape, 10).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        found = layer_features(model, x, "all")
        assert [f.shape for f in found] == [(3, w) for w in widths]
        assert torch.allclose(found[-1], model.features(x))
        assert not any(a.shape == b.shape and torch.allclose(a, b) for i, a in enumerate(found)
                       for b in found[i + 1:])  # no layer twice


def test_feature_collisions_beta_pulls_the_poisons_back_to_their_bases_by_forward_backward_splitting(task, surrogate):
    """Shafahi et al.'s proximal step acts: with the eps box out of the way (eps 1) a larger β0 leaves smaller
    perturbations, at a higher feature loss; each poison's objective never rises (backtracking); the ℓ∞ method
    (JHT's) and Adam stay in the box."""
    threat = ThreatModel.for_data(task.train, 6, target_class=1, eps=1.0, target_image=target_image(task))
    bases = task.train.x[make("feature-collision").craft(task.train, threat, surrogate, seed=0).indices]
    with torch.no_grad():
        target = surrogate.eval().features(threat.target_image)

    def measured(beta):
        attack = make_attack("feature-collision", method="forward-backward", beta=beta)
        poison = attack.craft(task.train, threat, surrogate, seed=0)
        with torch.no_grad():
            miss = (surrogate.features(poison.x) - target).pow(2).sum(1).mean()
        return float((poison.x - bases).flatten(1).norm(dim=1).mean()), float(miss)

    (free, free_miss), (mild, _), (pulled, pulled_miss) = measured(0.0), measured(0.0001), measured(0.25)
    assert pulled < 0.8 * free and mild < free and pulled_miss > free_miss
    attack = make_attack("feature-collision", method="forward-backward", beta=0.25)
    assert attack.effective_beta(bases) == pytest.approx(0.25 * (2048 / 64) ** 2)
    assert make_attack("feature-collision").effective_beta(bases) == 0.0  # JHT's l-inf method has no beta
    start = bases + 0.3 * (threat.target_image - bases)
    poison = attack.craft(task.train, threat, surrogate, seed=0)
    with torch.no_grad():
        def objective(x):
            return (surrogate.features(x) - target).pow(2).sum(1) + attack.effective_beta(bases) * \
                (x - bases).flatten(1).pow(2).sum(1)
        assert bool((objective(poison.x) <= objective(start) + 1e-5).all())
    box = ThreatModel.for_data(task.train, 6, target_class=1, eps=0.05, target_image=target_image(task))
    for method in ("linf", "adam", "forward-backward"):
        poison = make_attack("feature-collision", method=method, steps=20).craft(task.train, box, surrogate, seed=0)
        assert float((poison.x - bases).abs().max()) <= 0.05 + 1e-6


def test_convex_polytopes_crafting_dropout_draws_each_trials_masks_from_its_seed(task, surrogate):
    """Zhu et al.'s transferable variant: dropout on the poisons' features while crafting changes the poisons,
    is reproducible, and a trial crafted with others gets the poisons it gets alone."""
    threats = [ThreatModel.for_data(task.train, 4, target_class=c, target_image=task.val.x[task.val.y != c][:1],
                                    eps=8 / 255) for c in (1, 0)]
    attack = make("convex-polytope", steps=10, dropout=0.3)
    together = attack.craft_group(task.train, threats, surrogate, [3, 4])
    for threat, seed, grouped in zip(threats, [3, 4], together, strict=True):
        assert torch.allclose(grouped.x, attack.craft(task.train, threat, surrogate, seed=seed).x, atol=1e-6)
    plain = make("convex-polytope", steps=10).craft(task.train, threats[0], surrogate, seed=3)
    assert not torch.allclose(plain.x, together[0].x, atol=1e-4)
    assert together[0].params["dropout"] == 0.3
