"""Clean-label backdoor (Turner, Tsipras & Madry 2019, "Label-consistent backdoor attacks"): target-class training
images made hard to learn by an adversarial perturbation, then stamped with the trigger, their labels kept; the
victim learns to rely on the trigger for the target class."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from ..data import Dataset
from ..device import device_of
from ..errors import ConfigError
from ..models import Classifier
from ..seeding import generator
from ..threat import PoisonSet, ThreatModel, Trigger
from .base import CleanLabelTargeted, check_choice, require_target
from .feature_space import clean_label_bases, ensemble, frozen, project

# Turner et al.'s 3×3 pattern (+1 white, -1 black) for the right-hand corners; the left-hand corners get its mirror
# image, so the four-corner trigger survives horizontal flips (their `poison_attack.py`).
RIGHT = torch.tensor([[-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])


@dataclass(frozen=True)
class CleanLabelBackdoor(CleanLabelTargeted):
    """Poisons: `budget` training images of the target class, each moved by PGD (`steps` signed steps of
    `step_size` from a uniform start in the eps box, maximising the surrogate's cross-entropy on its true label;
    an ensemble sums the losses) and stamped with the trigger; labels unchanged.

    The trigger (`trigger`): "bottom-right", Turner's 3×3 black-and-white pattern in the corner, scaled to
    `patch_size` pixels (nearest neighbour); "all-corners", that pattern in all four corners, mirrored on the left.
    `amplitude` 1 pastes it; below 1 it adds ±`amplitude` to the pixels (Turner's reduced amplitude), clipped to
    [0, 1]; the test images carry the same trigger.

    `variant="turner"` (Turner's `generate_poisoned_dataset.py`): the trigger is stamped over the perturbed image,
    outside the eps box. `variant="jht"` (JHT's `craft_poisons_clbd.py`): no perturbation under the trigger, and
    the whole change, trigger included, clamped to ±eps of the base.

    Two protocols. Class-level (Turner's): with a target class and no target image, success is the test images of
    every other class (or of `--source-class` only) with the trigger classified as the target class. Single-target
    (JHT's `poison_test.py`): given a target image, the bases are of the attacker's class and success is the
    target *with* the trigger classified as it.

    Departures: PGD runs on the victim's pretrained network (or the grey/black-box surrogates), not on an
    adversarially trained one (Turner's and JHT's default); the JHT variant's trigger is this pattern, not JHT's
    `clbd.png` image."""

    name: ClassVar[str] = "clean-label-backdoor"
    summary: ClassVar[str] = ("clean-label backdoor: target-class images made hard by PGD, then triggered, labels "
                              "kept (Turner et al. 2019)")
    needs: ClassVar[str] = "gradients"
    honours: ClassVar[frozenset[str]] = frozenset({"eps", "target_class", "source_class"})

    variant: str = "turner"
    trigger: str = "bottom-right"
    patch_size: int = 3
    amplitude: float = 1.0
    steps: int = 20
    step_size: float = 2 / 255
    random_start: bool = True

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, ("turner", "jht"))
        check_choice("trigger", self.trigger, ("bottom-right", "all-corners"))
        if self.patch_size < 1 or not 0 < self.amplitude <= 1 or self.steps < 0 or self.step_size <= 0:
            raise ConfigError(f"clean-label-backdoor needs patch_size >= 1, amplitude in (0, 1], steps >= 0 and "
                              f"step_size > 0; got patch_size={self.patch_size}, amplitude={self.amplitude}, "
                              f"steps={self.steps}, step_size={self.step_size}.")

    def single_target(self, scenario) -> bool:
        """Class-level when given a target class (the attacker picks it); single-target when the runner draws
        each trial's target image and attacker's class."""
        return scenario.source_class is None and scenario.target_class is None

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        self.make_trigger(shape)

    def make_trigger(self, shape: tuple[int, int, int]) -> Trigger:
        """The trigger for C×H×W images: the pattern (±1) in the chosen corners, pasted or added at `amplitude`."""
        c, h, w = shape
        s = self.patch_size
        corners = 4 if self.trigger == "all-corners" else 1
        if (2 * s if corners == 4 else s) > min(h, w):
            raise ConfigError(f"{self.name}: a {self.trigger} trigger of patch_size={s} does not fit {h}×{w} images; "
                              f"use patch_size <= {min(h, w) // (2 if corners == 4 else 1)}.")
        right = F.interpolate(RIGHT[None, None], size=(s, s), mode="nearest")[0, 0]
        signs, mask = torch.zeros(h, w), torch.zeros(1, h, w)
        places = [(h - s, w - s, right)]
        if corners == 4:
            places += [(0, w - s, right), (0, 0, right.flip(1)), (h - s, 0, right.flip(1))]
        for top, left, patch in places:
            signs[top:top + s, left:left + s] = patch
            mask[:, top:top + s, left:left + s] = 1.0
        signs = signs.expand(c, h, w).clone()
        if self.amplitude == 1.0:
            return Trigger(mask, (signs + 1) / 2)
        return Trigger(mask, signs * self.amplitude, blend="add")

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        models = ensemble(surrogate, self.name)
        if threat.target_image is None:
            require_target(threat, self.name)
        g = generator(seed, self.name)
        indices = clean_label_bases(train, threat, g)
        trigger, device = self.make_trigger(train.shape), device_of(models[0])
        bases, labels = train.x[indices].to(device), train.y[indices].to(device)
        with frozen(models):
            hard = self.perturb(models, bases, labels, threat.eps, g)
        poisons = self.stamp(hard, bases, trigger, threat.eps)
        single = threat.target_image is not None
        return PoisonSet(indices, poisons.cpu(), train.y[indices].clone(), threat.num_classes, self.name,
                         threat.target_class, trigger, None if single else "all-to-one",
                         target_image_index=threat.target_image_index, params=asdict(self),
                         source_class=threat.source_class)

    def perturb(self, models: list[Classifier], bases: torch.Tensor, labels: torch.Tensor, eps: float,
                g: torch.Generator) -> torch.Tensor:
        """PGD away from the true labels within the eps box (Madry et al.; the step signed, the loss summed over
        images and models), all images at once."""
        x = bases.clone()
        if self.random_start:
            x = x + (torch.rand(bases.shape, generator=g) * 2 - 1).to(bases.device) * eps
        for _ in range(self.steps):
            x.requires_grad_(True)
            loss = sum(F.cross_entropy(m(x), labels, reduction="sum") for m in models)
            grad, = torch.autograd.grad(loss, x)
            x = project(x.detach() + self.step_size * grad.sign(), bases, eps)
        return project(x.detach(), bases, eps)

    def stamp(self, hard: torch.Tensor, bases: torch.Tensor, trigger: Trigger, eps: float) -> torch.Tensor:
        """The perturbed images with the trigger: stamped over them (Turner), or JHT's way, the perturbation
        zeroed under the trigger and the whole change clamped to ±eps."""
        if self.variant == "turner":
            return trigger.apply(hard)
        outside = (trigger.mask.to(hard.device) == 0).to(hard.dtype)
        stamped = trigger.apply(bases + (hard - bases) * outside)
        return (bases + (stamped - bases).clamp(-eps, eps)).clamp(0.0, 1.0)
