"""Detectors and certified defenses: their effect against known poisons, and the promises every detector keeps."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from poisonlab import ThreatModel, build_model, make_attack, train
from poisonlab.defenses import (
    DEFENSES,
    DPA,
    DefenseContext,
    Detector,
    certified_accuracy,
    certified_radius,
    make_defense,
)
from poisonlab.defenses.detect import auroc, detection_counts, removal_mask, representation, robust_z
from poisonlab.errors import ConfigError
from poisonlab.metrics import attack_success_rate, clean_accuracy
from poisonlab.models import TrainRecipe

DETECTORS = [name for name, cls in DEFENSES.items() if issubclass(cls, Detector)]
FASHION_RECIPE = TrainRecipe(epochs=4, batch_size=64, lr=0.002, schedule="cosine")


def poisoned_set(splits, attack: str, budget: float, seed: int, classes=None, train_size=None, target_class=7,
                 **params):
    data = splits.subset(classes, train_size, 2000 if train_size else None, seed=seed)
    fields = {"target_class": target_class} if attack == "badnets" else {"goal": "availability"}
    threat = ThreatModel.for_data(data.train, budget, **fields)
    poison = make_attack(attack, **params).craft(data.train, threat, seed=seed)
    poisoned = poison.apply(data.train)
    is_poison = torch.zeros(len(poisoned), dtype=torch.bool)
    is_poison[poison.indices] = True
    return data, threat, poison, poisoned, is_poison


def detect(name: str, poisoned, is_poison, budget: int, model=None, seed: int = 0, **params):
    """Recall, AUROC and the kept mask of a detector's own removal rule (as `defend` removes)."""
    defense = make_defense(name, **params)
    z = representation(poisoned, model if defense.needs_model else None, defense.space)
    scores = defense.score_representation(z, poisoned.y, seed)
    keep = defense.kept(z, poisoned.y, scores, budget, seed)
    counts = detection_counts(scores, is_poison, keep)
    return counts.removed_poisons / counts.n_poisons_present, counts.detection_auroc, keep


@pytest.fixture(scope="module")
def fashion_badnets(fashion):
    """Fashion-MNIST, 6,000 training images, BadNets 5% (300 poisons) -> class 7, a convnet trained on them."""
    data, threat, poison, poisoned, is_poison = poisoned_set(
        fashion, "badnets", 0.05, seed=0, train_size=6000, patch_size=4, margin=1, pattern="checkerboard")
    model = train(build_model("convnet", data.train.shape, 10, seed=0), poisoned, FASHION_RECIPE, seed=0)
    return data, threat, poison, poisoned, is_poison, model


# At a 5% budget the paper's spectral rule (1.5x the budget from every class) would drop 75% of the training set;
# the global robust-z ranking removes 1.5x the budget in all (docs/defenses/spectral-signatures.md); the same for
# spectre's default (docs/defenses/spectre.md).
AT_5_PERCENT = {"spectral-signatures": {"ranking": "global"}, "spectre": {"ranking": "global"}}


@pytest.mark.parametrize("name", ["spectral-signatures", "activation-clustering", "spectre"])
def test_feature_detectors_remove_90pct_of_badnets_poisons_at_1p5x_budget_on_fashion_mnist(fashion_badnets, name):
    data, threat, poison, poisoned, is_poison, model = fashion_badnets
    assert attack_success_rate(model, data.test, poison).value > 0.9  # the backdoor is in
    recall, area, _ = detect(name, poisoned, is_poison, threat.budget, model, **AT_5_PERCENT.get(name, {}))
    assert recall >= 0.9 and area >= 0.95, (recall, area)


@pytest.mark.parametrize("name", ["spectral-signatures", "activation-clustering"])
def test_retraining_on_kept_data_brings_badnets_success_below_10pct_on_fashion_mnist(fashion_badnets, name):
    data, threat, poison, poisoned, is_poison, model = fashion_badnets
    _, _, keep = detect(name, poisoned, is_poison, threat.budget, model, **AT_5_PERCENT.get(name, {}))
    kept = poisoned.take(torch.nonzero(keep).squeeze(1))
    defended = train(build_model("convnet", data.train.shape, 10, seed=0), kept, FASHION_RECIPE, seed=0)
    assert attack_success_rate(defended, data.test, poison).value < 0.10
    assert clean_accuracy(defended, data.test).value > clean_accuracy(model, data.test).value - 0.03


def test_activation_clusterings_relative_size_rule_removes_the_small_clusters_whole(fashion_badnets):
    """Chen et al.'s rule (rule=size): every class whose smaller 2-means cluster holds < 35% of it loses that
    cluster. BadNets 5% into class 7 (a third of the class): all 300 poisons go, with the small clusters of other
    classes (measured: 495 removed, 195 clean). It cannot see a backdoor that is 35% of its class or more (10%
    into class 4: none found; docs/defenses/activation-clustering.md)."""
    from poisonlab.defenses.detect import representation

    data, threat, poison, poisoned, is_poison, model = fashion_badnets
    z = representation(poisoned, model, "features")
    flagged = make_defense("activation-clustering", rule="size").flag(z, poisoned.y, 0)
    assert float(flagged[is_poison].float().mean()) >= 0.9 and int(flagged.sum()) < 3 * int(is_poison.sum())
    with pytest.raises(ConfigError, match="rule must be"):
        make_defense("activation-clustering", rule="silhouette")
    with pytest.raises(ConfigError, match="leave `removal` unset"):
        make_defense("activation-clustering", rule="size", removal=0.1)


@pytest.fixture(scope="module")
def fashion_badnets_1pct(fashion):
    """BadNets 1% (60 poisons) into class 2 (pullover, a class of wide natural spread), a convnet trained on it."""
    data, threat, poison, poisoned, is_poison = poisoned_set(
        fashion, "badnets", 0.01, seed=0, train_size=6000, target_class=2, patch_size=4, margin=1,
        pattern="checkerboard")
    model = train(build_model("convnet", data.train.shape, 10, seed=0), poisoned, FASHION_RECIPE, seed=0)
    return data, threat, poison, poisoned, is_poison, model


# detector, its global / score-ranking rule, least recall of the default (the paper's rule), most recall of the
# global rule, most attack success after retraining on what the default keeps. Measured on this set: spectral
# signatures 96.7% / 53% recall, 7.7% success (undefended 99%); spectre (1.5x the budget from every class)
# 81.7% / 5%, 51% (docs/defenses: the 1/5/10% tables); activation clustering has its own test below. On an AMD
# EPYC with AVX2 only, spectral signatures' default keeps 6 of the 60 poisons (recall 90%) and those 6 leave 29.2%
# success (23-51% over victim seeds 0-2): a handful of kept poisons is a backdoor of varying strength.
PAPER_RULES_AT_1_PERCENT = [("spectral-signatures", {"ranking": "global"}, 0.85, 0.7, 0.5),
                            ("spectre", {"ranking": "global"}, 0.7, 0.3, 0.75)]


@pytest.mark.parametrize("name, other, least, most_other, most_success", PAPER_RULES_AT_1_PERCENT,
                         ids=[case[0] for case in PAPER_RULES_AT_1_PERCENT])
def test_detectors_by_default_catch_a_1pct_backdoor_that_their_global_ranking_misses(
        fashion_badnets_1pct, name, other, least, most_other, most_success):
    """The default of every feature detector is its paper's removal rule: at 1% into class 2 it finds what one
    global ranking of 1.5x the budget misses (clean tails of wide classes outrank the poisons), and retraining on
    what it keeps cuts the backdoor."""
    data, threat, poison, poisoned, is_poison, model = fashion_badnets_1pct
    assert attack_success_rate(model, data.test, poison).value > 0.9
    recall, _, keep = detect(name, poisoned, is_poison, threat.budget, model)
    other_recall, _, _ = detect(name, poisoned, is_poison, threat.budget, model, **other)
    assert recall >= least and other_recall < most_other, (recall, other_recall)
    kept = poisoned.take(torch.nonzero(keep).squeeze(1))
    defended = train(build_model("convnet", data.train.shape, 10, seed=0), kept, FASHION_RECIPE, seed=0)
    assert attack_success_rate(defended, data.test, poison).value < most_success


def test_activation_clusterings_default_catches_a_1pct_backdoor_on_most_victims(fashion_badnets_1pct):
    """Chen et al.'s relative-size rule (the default) at 1% into class 2, on victims of seeds 0, 1, 2: it finds the
    poisons on at least two of them, and retraining on what it keeps cuts the backdoor. Whether 2-means splits the
    poisons off the wide pullover class depends on the victim: measured recall 0.0 / 1.0 / 1.0 on an AMD EPYC with
    AVX-512 (seed 0's split flags 404 clean images instead), 1.0 for seed 0 on an Intel Xeon with AVX-512 and an AMD
    EPYC with AVX2; the score ranking's recall moves with it (0.33 / 1.0 / 0.98), so it is not compared here."""
    data, threat, poison, poisoned, is_poison, model = fashion_badnets_1pct
    found = []
    for seed in (0, 1, 2):
        victim = model if seed == 0 else train(build_model("convnet", data.train.shape, 10, seed=seed), poisoned,
                                               FASHION_RECIPE, seed=seed)
        recall, _, keep = detect("activation-clustering", poisoned, is_poison, threat.budget, victim)
        found.append((recall, keep))
    assert sum(recall >= 0.9 for recall, _ in found) >= 2, [recall for recall, _ in found]
    keep = next(keep for recall, keep in found if recall >= 0.9)
    kept = poisoned.take(torch.nonzero(keep).squeeze(1))
    defended = train(build_model("convnet", data.train.shape, 10, seed=0), kept, FASHION_RECIPE, seed=0)
    assert attack_success_rate(defended, data.test, poison).value < 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_slab_and_sphere_catch_label_flips_in_input_space_on_binary_digits(digits, seed):
    _, threat, _, poisoned, is_poison = poisoned_set(digits, "label-flip", 0.05, seed, classes=[0, 1])
    slab_recall, slab_auroc, _ = detect("slab", poisoned, is_poison, threat.budget)
    sphere_recall, sphere_auroc, _ = detect("sphere", poisoned, is_poison, threat.budget)
    assert slab_recall >= 0.9 and slab_auroc >= 0.99, (slab_recall, slab_auroc)
    assert sphere_recall >= 0.7 and sphere_auroc >= 0.95, (sphere_recall, sphere_auroc)


def test_deep_knn_catches_label_flips_among_ten_digit_classes(digits):
    _, threat, _, poisoned, is_poison = poisoned_set(digits, "label-flip", 0.05, seed=0)
    recall, area, _ = detect("deep-knn", poisoned, is_poison, threat.budget, space="input", k=10, rule="top")
    assert recall >= 0.95 and area >= 0.99, (recall, area)


def test_detector_defaults_are_their_papers_removal_rules():
    """No rule holds at every budget (docs/defenses), so each detector's default is its paper's."""
    assert make_defense("spectral-signatures").ranking == "per-class"
    assert make_defense("activation-clustering").rule == "size"
    assert make_defense("spectre").ranking == "per-class"
    assert (make_defense("deep-knn").rule, make_defense("deep-knn").k) == ("plurality", 101)


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_gives_one_finite_seeded_score_per_sample_and_leaves_data_untouched(digits, name):
    _, threat, _, poisoned, _ = poisoned_set(digits, "label-flip", 0.05, seed=0, classes=[0, 1, 2])
    before = poisoned.x.clone()
    model = build_model("mlp", poisoned.shape, poisoned.num_classes, seed=0).eval()
    defense = make_defense(name)
    first = defense.score(poisoned, model, seed=3)
    assert first.shape == (len(poisoned),) and torch.isfinite(first).all()
    assert torch.equal(first, defense.score(poisoned, model, seed=3))
    assert torch.equal(poisoned.x, before)


def test_feature_space_detectors_ask_for_a_model_and_bad_parameters_raise(digits):
    with pytest.raises(ConfigError, match="needs the model"):
        make_defense("spectral-signatures").score(digits.train)
    for name, params in [("spectral-signatures", {"removal": 1.5}), ("deep-knn", {"k": 0}),
                         ("activation-clustering", {"reduction": "tsne"}), ("sphere", {"space": "pixels"}),
                         ("spectre", {"support_fraction": 0.3}), ("dpa", {"partitions": 0})]:
        with pytest.raises(ConfigError):
            make_defense(name, **params)
    with pytest.raises(ConfigError, match="choose one of"):
        make_defense("spectral")
    with pytest.raises(ConfigError, match="no parameter"):
        make_defense("slab", radius=3)


def test_removal_defaults_to_1p5x_budget_and_auroc_matches_sklearn():
    assert make_defense("slab").n_remove(1000, 40) == 60
    assert make_defense("slab", removal=0.1).n_remove(1000, 40) == 100
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (300,), generator=g).float()  # many ties
    positive = torch.rand(300, generator=g) < 0.2
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive.numpy(), scores.numpy()))
    keep = removal_mask(torch.tensor([0.1, 5.0, 3.0, 5.0]), 2)
    assert keep.tolist() == [True, False, True, False]
    z = robust_z(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert z[2] == 0 and z[-1] > 40  # the outlier does not inflate the scale


def test_dpa_certified_radius_matches_hand_computed_cases():
    # votes over 3 classes from 10 models; ties go to the smaller class
    votes = torch.tensor([[5.0, 3, 2], [4, 4, 2], [3, 4, 3], [2, 5, 3], [10, 0, 0], [0, 6, 4]])
    # (5-3)/2=1; tie -> class 0, (4-4)/2=0; class 1 vs class 0 (+1 tie edge): (4-4)/2=0; (5-(2+1))/2=1;
    # 10/2=5; class 1 vs class 0 (0+1) and class 2 (4): (6-4)/2=1
    assert certified_radius(votes).tolist() == [1, 0, 0, 1, 5, 1]
    y = torch.tensor([0, 0, 1, 1, 1, 1])  # row 4 predicts 0: wrong
    assert certified_accuracy(votes, y) == pytest.approx([5 / 6, 3 / 6, 0, 0, 0, 0])


def test_dpa_partitions_by_image_content_and_certifies_a_digits_vote(digits):
    dpa = DPA(partitions=5)
    parts = dpa.partition(digits.train.x)
    assert torch.equal(parts, dpa.partition(digits.train.x.clone()))
    assert torch.bincount(parts, minlength=5).min() > len(parts) / 5 * 0.8  # roughly balanced
    flipped = digits.train.with_samples(torch.arange(10), digits.train.x[:10], (digits.train.y[:10] + 1) % 10)
    assert torch.equal(dpa.partition(flipped.x), parts)  # a label flip stays in its part
    recipe = TrainRecipe(optimizer="exact", C=1.0)
    build = lambda: build_model("logistic", digits.train.shape, 10)  # noqa: E731
    context = DefenseContext.from_scratch(digits.train, train(build(), digits.train, recipe), build, recipe, 0, 0,
                                          digits.test)
    defended = dpa.defend(context)
    ensemble = defended.model
    votes = ensemble.votes(digits.test.x)
    assert votes.sum(1).eq(5).all()
    curve = certified_accuracy(votes, digits.test.y)
    assert len(curve) == 3 and curve[0] == pytest.approx(clean_accuracy(ensemble, digits.test).value)
    assert curve[0] > 0.9 and curve[0] >= curve[1] >= curve[2] > 0.5
    assert defended.counts.certified_accuracy == curve


@pytest.mark.slow
def test_strip_rejects_most_triggered_inputs_and_few_clean_ones_on_fashion_mnist(fashion_badnets):
    data, _, poison, _, _, model = fashion_badnets
    strip = make_defense("strip")
    guarded = strip.fit(model, strip.defender_data(data.train, seed=0), seed=0)
    triggered = poison.trigger.apply(data.test.x[data.test.y != 7])
    rejected = float(guarded.rejected(triggered).float().mean())
    assert rejected > 0.75  # measured 0.83 and 0.79 on this model on two machines (0.98 over 2 trials)
    assert guarded.rejected(data.test.x).float().mean() < 0.03  # nominal false rejection 1%
    # a rejected input is no success: of the backdoor's 99.9%, at most the accepted share is left (measured 0.20)
    success = attack_success_rate(guarded, data.test, poison).value
    assert success < 0.25 and success <= 1 - rejected + 0.02, (success, rejected)


@pytest.fixture(scope="module")
def mnist_models(mnist_dir):
    """MNIST (the real test images, split 3,400 / 1,000), BadNets 5% -> 7; a poisoned and a clean convnet."""
    from poisonlab.data import load_dataset

    splits = load_dataset("mnist-t10k", root=str(mnist_dir))
    data, _, poison, poisoned, _ = poisoned_set(splits, "badnets", 0.05, seed=0, train_size=3400, patch_size=4,
                                                margin=1, pattern="checkerboard")
    models = [train(build_model("convnet", data.train.shape, 10, seed=0), train_set, FASHION_RECIPE, seed=0)
              for train_set in (poisoned, data.train)]
    return data, poison, *models


@pytest.mark.slow
def test_neural_cleanse_flags_the_backdoor_target_on_a_poisoned_convnet_and_nothing_on_a_clean_one(mnist_models):
    data, poison, poisoned_model, clean_model = mnist_models
    nc = make_defense("neural-cleanse", rule="gap")
    defender_data = nc.defender_data(data.train, seed=0)
    on_poisoned = nc.inspect(poisoned_model, defender_data, seed=0)
    assert on_poisoned.flagged == [7] and int(on_poisoned.mask_norms.argmin()) == 7
    assert (on_poisoned.trigger_success > 0.85).all()  # every class's reversed trigger works
    assert nc.inspect(clean_model, defender_data, seed=0).flagged == []
    assert on_poisoned.anomaly_index[7] == on_poisoned.anomaly_index.max()  # the paper's index ranks it first too
    unlearned = nc.mitigate(poisoned_model, defender_data, on_poisoned, FASHION_RECIPE, seed=0)
    assert attack_success_rate(unlearned, data.test, poison).value < 0.2


@pytest.mark.parametrize("k", [1, 10, 101])
def test_deep_knn_plurality_rule_is_peri_et_al_s_knn_vote_and_catches_label_flips(digits, k):
    """rule=plurality removes exactly what scikit-learn's k-NN classifier (fit on the training set, asked about
    the training set, as Peri et al.'s code does) gets wrong; on 5% flipped digits (pixel space) it removes them
    all at k = 10 and 101 while keeping most clean samples."""
    from sklearn.neighbors import KNeighborsClassifier

    _, _, _, poisoned, is_poison = poisoned_set(digits, "label-flip", 0.05, seed=0)
    z = poisoned.x.flatten(1)
    flagged = make_defense("deep-knn", space="input", k=k, rule="plurality").flag(z, poisoned.y)
    knn = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(z.numpy(), poisoned.y.numpy())
    assert flagged.tolist() == (knn.predict(z.numpy()) != poisoned.y.numpy()).tolist()
    if k > 1:
        recall, clean_removed = float(flagged[is_poison].float().mean()), float(flagged[~is_poison].float().mean())
        assert recall >= 0.95 and clean_removed <= 0.1, (recall, clean_removed)


def test_deep_knn_rule_is_checked():
    with pytest.raises(ConfigError, match="rule must be"):
        make_defense("deep-knn", rule="majority")
    with pytest.raises(ConfigError, match="leave `removal` unset"):
        make_defense("deep-knn", rule="plurality", removal=0.1)


def test_per_class_ranking_trims_every_class_by_its_own_scores():
    """ranking=per-class removes 1.5x the budget from each class (Tran et al.'s rule), whatever the other classes
    score; ranking=global removes 1.5x the budget in all, from the top of one ranking."""
    scores = torch.tensor([9.0, 8.0, 7.0, 1.0, 0.5, 0.4, 0.3, 0.2])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    per_class = make_defense("spectral-signatures", ranking="per-class").keep_mask(scores, y, 1)  # 2 per class
    assert per_class.tolist() == [False, False, True, True, False, False, True, True]
    overall = make_defense("spectral-signatures", ranking="global").keep_mask(scores, y, 1)  # 2 in all
    assert overall.tolist() == [False, False, True, True, True, True, True, True]
    with pytest.raises(ConfigError, match="ranking must be"):
        make_defense("spectre", ranking="per-label")
    with pytest.raises(ConfigError, match="statistic must be"):
        make_defense("spectral-signatures", statistic="cubed")
