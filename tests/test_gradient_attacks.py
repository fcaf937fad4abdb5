"""Witches' Brew and MetaPoison in a small case (digits, a convnet trained from scratch): their objectives move
the right way, and a victim retrained from scratch on the poisons moves the target toward the adversarial class."""

import pytest
import torch
from torch.nn import functional as F

from poisonlab.attacks import make_attack
from poisonlab.attacks.witches_brew import gradient_alignment
from poisonlab.models import TrainRecipe, build_model, predict, train
from poisonlab.threat import ThreatModel

RECIPE = TrainRecipe(epochs=10, batch_size=64, lr=3e-3, schedule="cosine")
SGD_RECIPE = TrainRecipe(epochs=10, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine")


@pytest.fixture(scope="module")
def surrogate(digits):
    return train(build_model("convnet", digits.train.shape, 10, seed=0), digits.train, RECIPE, seed=0)


def trial_threat(digits, surrogate, trial):
    """A correctly classified test image and another class, drawn from the trial number; 30 poisons at 32/255."""
    g = torch.Generator().manual_seed(trial)
    correct = torch.nonzero(predict(surrogate, digits.test.x) == digits.test.y).squeeze(1)
    position = int(correct[torch.randint(len(correct), (1,), generator=g)])
    adversarial = int((digits.test.y[position] + 1 + torch.randint(9, (1,), generator=g)) % 10)
    return ThreatModel.for_data(digits.train, 30, eps=32 / 255, target_class=adversarial,
                                target_image=digits.test.x[position:position + 1])


def adversarial_losses(digits, poison, threat, trial, recipe=RECIPE):
    """The target's loss toward the adversarial class for victims (same seed) trained on poisoned / clean data."""
    losses = []
    for data in (poison.apply(digits.train), digits.train):
        victim = train(build_model("convnet", digits.train.shape, 10, seed=100 + trial), data, recipe, seed=100 + trial)
        with torch.no_grad():
            losses.append(float(F.cross_entropy(victim(threat.target_image), torch.tensor([threat.target_class]))))
    return losses


@pytest.mark.parametrize("trial", [0, 1])
def test_witches_brew_raises_the_gradient_alignment_and_pulls_the_target_toward_the_adversarial_class(
        digits, surrogate, trial):
    threat = trial_threat(digits, surrogate, trial)
    poison = make_attack("witches-brew", steps=100, augment=False).craft(digits.train, threat, surrogate, seed=trial)
    before = float(gradient_alignment([surrogate], digits.train.x[poison.indices], poison.y, threat.target_image,
                                      threat.target_class))
    assert poison.params["alignment"] >= before + 0.2  # measured: 0.34 -> 0.71, 0.16 -> 0.65
    poisoned, control = adversarial_losses(digits, poison, threat, trial)
    assert poisoned < control  # measured: 19.0 vs 20.7, 11.0 vs 11.3


def test_metapoison_lowers_its_unrolled_adversarial_loss_and_pulls_the_victims_target(digits, surrogate):
    """Victims trained from scratch by SGD with momentum, without augmentation, as the attack is told (its
    surrogates train by the same optimiser, augment=False): the ensemble's unrolled loss falls and the victims'
    target loss moves toward the adversarial class, in sum and in two of three trials. The official algorithm
    at a small scale: 2 staggered surrogates 2 epochs apart, 12 crafting steps (drops at 5 and 10), metagradients
    on 4 of each epoch's poison-bearing batches."""
    moved, lowered = [], []
    attack = make_attack("metapoison", steps=12, lr_drops=5, stages=2, stage_epochs=2, batch_size=64, augment=False,
                         momentum=0.9, inner_lr=0.05, meta_batches=4)
    for trial in range(3):
        threat = trial_threat(digits, surrogate, trial)
        poison = attack.craft(digits.train, threat, surrogate, seed=trial)
        start, end = poison.params["adversarial_loss"]
        lowered.append(start - end)
        poisoned, control = adversarial_losses(digits, poison, threat, trial, SGD_RECIPE)
        moved.append(control - poisoned)
    # measured (2026-12-06, Intel Xeon, AVX-512): the unrolled CW loss fell by 0.24, 0.27, 0.16; the victims'
    # target loss by 0.40, 2.84, 0.21. On an AMD EPYC with AVX2 only (2026-12-07) the victims' moves were -0.17,
    # +2.67, -0.61: the single trials sit within the victims' run-to-run noise, their sum does not.
    assert sum(lowered) > 0 and sum(d > 0 for d in lowered) >= 2, lowered
    assert sum(moved) > 0.5, moved


def test_metapoisons_schedules_and_loss_are_the_official_codes():
    """The craft rate warms up by ((step + 1) / 5)² and drops by 10 at lr_drops and 2·lr_drops; the surrogates'
    SGD rate warms up linearly over 5 epochs; the Carlini-Wagner loss is the best other logit minus the
    adversarial one, floored at -100."""
    from poisonlab.attacks.metapoison import MetaPoison, target_loss

    attack = MetaPoison(lr=1.0, lr_drops=20)
    assert [round(attack.craft_rate(s), 4) for s in (0, 4, 19, 20, 39, 40, 60)] == [0.04, 1.0, 1.0, 0.1, 0.1, 0.01,
                                                                                     0.01]
    assert [attack.inner_rate(e) for e in (0, 4, 10)] == [pytest.approx(0.02), pytest.approx(0.1), 0.1]
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 500.0]])
    assert torch.allclose(target_loss(logits, torch.tensor([2, 2]), "cw"), torch.tensor((1.0 - 100.0) / 2))
