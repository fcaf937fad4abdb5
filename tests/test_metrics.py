import pytest
import torch
from torch import nn

from poisonlab.data import Dataset
from poisonlab.metrics import Rate, attack_success_rate, clean_accuracy, wilson_interval
from poisonlab.models.architectures import Classifier
from poisonlab.threat import PoisonSet, Trigger


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert Rate(3, 4).value == 0.75


class CornerModel(Classifier):
    """Predicts class 2 when the top-left pixel is bright, otherwise the true-ish class from pixel (1, 1)."""

    def __init__(self):
        super().__init__(nn.Flatten(), 4, 3)

    def forward(self, x):
        trigger = x[:, 0, 0, 0] > 0.5
        guess = (x[:, 0, 1, 1] * 2.99).long()
        return nn.functional.one_hot(torch.where(trigger, 2, guess), 3).float()


def corner_data() -> tuple[Dataset, Trigger]:
    """Six 2×2 images, two per class (CornerModel reads their class from pixel (1, 1)), and the corner trigger."""
    x = torch.zeros(6, 1, 2, 2)
    x[:, 0, 1, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.9, 0.9])
    mask, pattern = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    mask[0, 0, 0] = pattern[0, 0, 0] = 1
    return Dataset(x, torch.tensor([0, 0, 1, 1, 2, 2]), ("a", "b", "c")), Trigger(mask, pattern)


def test_attack_success_counts_only_images_outside_the_target_class():
    test, trigger = corner_data()
    poison = PoisonSet(torch.empty(0, dtype=torch.long), torch.empty(0, 1, 2, 2), torch.empty(0, dtype=torch.long),
                       3, "badnets", target_class=2, trigger=trigger, backdoor_mode="all-to-one")
    model = CornerModel()
    assert clean_accuracy(model, test) == Rate(6, 6)
    assert attack_success_rate(model, test, poison) == Rate(4, 4)  # the two class-2 images are not counted
    no_trigger = PoisonSet(torch.empty(0, dtype=torch.long), torch.empty(0, 1, 2, 2),
                           torch.empty(0, dtype=torch.long), 3, "label-flip")
    assert attack_success_rate(model, test, no_trigger) is None


def test_class_targeted_success_counts_source_class_images_classified_as_the_target():
    x = torch.zeros(6, 1, 2, 2)
    x[:, 0, 1, 1] = torch.tensor([0.0, 0.9, 0.5, 0.5, 0.9, 0.9])  # the second class-0 image looks like class 2
    test = Dataset(x, torch.tensor([0, 0, 1, 1, 2, 2]), ("a", "b", "c"))
    poison = PoisonSet(torch.empty(0, dtype=torch.long), torch.empty(0, 1, 2, 2), torch.empty(0, dtype=torch.long),
                       3, "bilevel-linear", target_class=2, source_class=0)
    assert attack_success_rate(CornerModel(), test, poison) == Rate(1, 2)


def test_a_hidden_triggers_success_is_measured_on_triggered_source_images_or_the_triggered_target():
    """A set with a trigger and a source class (or a target image) wants those images *with* the trigger."""
    test, trigger = corner_data()
    empty = (torch.empty(0, dtype=torch.long), torch.empty(0, 1, 2, 2), torch.empty(0, dtype=torch.long), 3)
    hidden = PoisonSet(*empty, "hidden-trigger", target_class=2, trigger=trigger, source_class=1)
    plain = PoisonSet(*empty, "hidden-trigger", target_class=2, source_class=1)
    assert attack_success_rate(CornerModel(), test, hidden) == Rate(2, 2)
    assert attack_success_rate(CornerModel(), test, plain) == Rate(0, 2)
    target = test.x[2:3]
    single = PoisonSet(*empty, "hidden-trigger", target_class=2, trigger=trigger)
    assert attack_success_rate(CornerModel(), test, single, target) == Rate(1, 1)
    assert attack_success_rate(CornerModel(), test, plain, target) == Rate(0, 1)
