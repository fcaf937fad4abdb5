"""What a trial measures on a victim: correct test predictions, the attack's hits on its inputs, the accuracy on
the test images the attack should leave alone; for a targeted trial, the target's adversarial loss and the
poisons' feature-space yardsticks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attacks.feature_space import adversarial_labels, project, relative_polytope_loss
from ..data import Dataset
from ..device import device_of
from ..metrics import AttackInputs
from ..models import Classifier, predict
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel
from .rows import TargetedPart
from .shared import Networks


@dataclass(frozen=True)
class Measured:
    correct: int
    attack_hits: int | None
    attack_inputs: int | None
    others_correct: int
    n_others: int


def measure(model: Classifier, predictions: torch.Tensor, test: Dataset, threat: ThreatModel,
            inputs: AttackInputs | None) -> Measured:
    """Counts of `model` whose test predictions are `predictions`. The others: every test image but a
    class-targeted attack's source class."""
    others = torch.ones(len(test), dtype=torch.bool) if threat.source_class is None else test.y != threat.source_class
    hits = None if inputs is None else int((predict(model, inputs.x) == inputs.wanted).sum())
    return Measured(int((predictions == test.y).sum()), hits, None if inputs is None else len(inputs.wanted),
                    int((predictions[others] == test.y[others]).sum()), int(others.sum()))


@torch.no_grad()
def adversarial_loss(model: Classifier, target_image: torch.Tensor, target_class: int) -> float:
    """The cross-entropy of the target toward the attacker's class (lower = closer to flipping)."""
    logits = model.eval()(target_image.to(device_of(model)))
    return float(torch.nn.functional.cross_entropy(logits, adversarial_labels(logits, target_class)))


def targeted_part(networks: Networks, train: Dataset, test: Dataset, threat: ThreatModel, target, poison: PoisonSet,
                  victim: Classifier, control: Classifier, seed: int, together: int) -> TargetedPart:
    """The target, the adversarial losses (of the target with the trigger, for a triggered attack), and the
    poisons' relative feature loss on the pretrained network beside that of random ±eps noise on the same bases."""
    image, bases = threat.target_image, train.x[poison.indices]
    attacked = image if poison.trigger is None else poison.trigger.apply(image)
    noise = project(bases + threat.eps * torch.sign(torch.randn(poison.x.shape, generator=generator(seed, "noise"))),
                    bases, threat.eps)
    return TargetedPart(
        target_image_index=threat.target_image_index, target_position=target.position,
        target_image_class=int(test.y[target.position]), target_class=threat.target_class,
        base_indices=poison.indices.tolist(), setup=target.setup, bases_topped_up=target.topped_up,
        setups_skipped=target.setups_skipped,
        target_adversarial_loss=adversarial_loss(victim, attacked, threat.target_class),
        control_adversarial_loss=adversarial_loss(control, attacked, threat.target_class),
        relative_feature_loss=relative_polytope_loss([networks.reference], poison.x, image),
        noise_feature_loss=relative_polytope_loss([networks.reference], noise, image),
        trials_crafted_together=together, pretrain_size=len(networks.pretrained_on),
        pretrain_disjoint=networks.pretrained_on.name != train.name or
        not bool(torch.isin(networks.pretrained_on.index, train.index).any()))
