"""STRIP (Gao et al. 2019): a triggered input keeps its (backdoor) prediction when blended with other images, so
the entropy of its predictions under superimposition is abnormally low; such inputs are rejected at test time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..metrics import pct
from ..models import Classifier
from ..seeding import derive_seed, generator
from .base import Counts, Defended, Defense, DefenseContext, defender_images


@dataclass(frozen=True)
class RejectionCounts(Counts):
    """How many clean test inputs, and how many of the attack's inputs (triggered test images, the target
    image), an input filter rejected."""

    rejected_clean: int
    n_clean: int
    rejected_attack_inputs: int | None
    n_attack_inputs: int | None

    @classmethod
    def summarise(cls, counts: list[RejectionCounts]) -> dict:
        attack = [c for c in counts if c.n_attack_inputs]
        return {"rejection_clean": sum(c.rejected_clean for c in counts) / sum(c.n_clean for c in counts),
                "rejection_attack_inputs": sum(c.rejected_attack_inputs for c in attack)
                / sum(c.n_attack_inputs for c in attack) if attack else None}

    @staticmethod
    def describe(summary: dict) -> str:
        return (f"rejects {pct(summary['rejection_attack_inputs'])} of the attack's inputs, "
                f"{pct(summary['rejection_clean'])} of clean test inputs")


@dataclass
class STRIP(Defense):
    """Superimpose each input on `overlays` random held-out clean images, average the
    entropy of the predicted distributions (Gao et al. 2019, Eq. 1-2), and reject inputs whose entropy is below
    the `false_rejection` quantile of the held-out clean images' entropies (the paper's threshold from a chosen
    false-rejection rate). The defender's clean images are `clean_fraction` of the (clean) training set, as the
    paper assumes.
    `blend="add"` superimposes as the paper's code does (x + x_ref, saturating at 1), keeping the trigger at full
    strength; `blend="mix"` takes (1−α)·x + α·x_ref."""

    name: ClassVar[str] = "strip"
    summary: ClassVar[str] = "test-time rejection of inputs with low entropy under superimposition (Gao et al.)"
    Counts: ClassVar[type] = RejectionCounts
    overlays: int = 20
    blend: str = "add"
    alpha: float = 0.5
    false_rejection: float = 0.01
    clean_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.overlays < 1 or not 0 < self.alpha < 1 or not 0 < self.false_rejection < 1 \
                or not 0 < self.clean_fraction <= 1 or self.blend not in ("add", "mix"):
            raise ConfigError("strip: overlays must be ≥ 1, blend 'add' or 'mix', and alpha, false_rejection, "
                              f"clean_fraction in (0, 1); got {self.overlays}, {self.blend!r}, {self.alpha}, "
                              f"{self.false_rejection}, {self.clean_fraction}.")

    def defend(self, context: DefenseContext) -> Defended:
        """The victim behind STRIP, and how many clean and attack test inputs it rejects."""
        guarded = self.fit(context.victim, self.defender_data(context.clean_train, context.seed), context.seed)
        attack = context.attack_inputs
        counts = RejectionCounts(rejections(guarded, context.test.x), len(context.test),
                                 None if attack is None else rejections(guarded, attack),
                                 None if attack is None else len(attack))
        return Defended(guarded, counts)

    def defender_data(self, train_set: Dataset, seed: int) -> Dataset:
        return defender_images(train_set, self.clean_fraction, seed, "strip-clean", at_least=2)

    @torch.no_grad()
    def entropy(self, model: Classifier, x: torch.Tensor, references: torch.Tensor, seed: int,
                batch_size: int = 256) -> torch.Tensor:
        """Mean prediction entropy of each input over its `overlays` blends (one batch of B×overlays images)."""
        model.eval()
        g = generator(seed, "strip-overlays")
        out = []
        for chunk in x.split(batch_size):
            ref = references[torch.randint(len(references), (len(chunk), self.overlays), generator=g)]
            blended = (chunk[:, None] + ref).clamp(max=1.0) if self.blend == "add" \
                else (1 - self.alpha) * chunk[:, None] + self.alpha * ref
            p = torch.softmax(model(blended.flatten(0, 1)), 1)
            out.append(-(p * p.clamp_min(1e-12).log()).sum(1).view(len(chunk), -1).mean(1))
        return torch.cat(out) if out else torch.empty(0)

    def fit(self, model: Classifier, defender_data: Dataset, seed: int) -> RejectingClassifier:
        """The model with STRIP in front: overlays drawn from the defender's clean images, its threshold set on
        their own entropies (an image rarely meets itself among its overlays)."""
        entropies = self.entropy(model, defender_data.x, defender_data.x, derive_seed(seed, "calibration"))
        threshold = torch.quantile(entropies, self.false_rejection)
        return RejectingClassifier(model, self, defender_data.x, float(threshold), seed)


class RejectingClassifier(nn.Module):
    """`model` whose outputs gain a last "rejected" column that wins for inputs STRIP rejects, so a rejected
    input counts neither as correct nor as an attack success."""

    def __init__(self, model: Classifier, strip: STRIP, references: torch.Tensor, threshold: float, seed: int):
        super().__init__()
        self.model, self.strip, self.threshold, self.seed = model, strip, threshold, seed
        self.register_buffer("references", references)
        self.memo: dict[str, torch.Tensor] = {}

    def rejected(self, x: torch.Tensor) -> torch.Tensor:
        """Which inputs STRIP rejects; remembered by content, since a trial asks about the same test images for
        several measures and each answer costs `overlays` forward passes per image."""
        key = hashlib.sha1(x.detach().contiguous().numpy().tobytes()).hexdigest()
        if key not in self.memo:
            self.memo[key] = self.strip.entropy(self.model, x, self.references, self.seed) < self.threshold
        return self.memo[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        reject = torch.where(self.rejected(x), float("inf"), float("-inf"))
        return torch.cat([logits, reject[:, None]], 1)


def rejections(guarded: RejectingClassifier, x: torch.Tensor, batch_size: int = 1024) -> int:
    """How many of `x` the filter rejects, asked in the chunks `predict` uses (so its memo serves both)."""
    return sum(int(guarded.rejected(chunk).sum()) for chunk in x.split(batch_size))
