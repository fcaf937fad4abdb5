"""The result of one trial, as stored in results.sqlite and read by the summary: one declared type with an
optional targeted part (one target image per trial) and an optional defense part. `SCHEMA_VERSION` names this
layout in the store; a store of another version is refused, never read half-right."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pydantic import ConfigDict, TypeAdapter, with_config

STRICT = ConfigDict(strict=True, extra="forbid")  # how a stored row is read back: whole and well typed

SCHEMA_VERSION = 3


@with_config(STRICT)
@dataclass(frozen=True)
class TargetedPart:
    """A targeted trial: its target test image (official index, position in the loaded test split, own class), the
    class the attacker wants for it, the training-split positions whose images the poisons replaced (every attack
    of a trial replaces the same ones), where they came from (a setups file's entry, bases topped up, setups
    skipped), the adversarial loss of the target (with the trigger, for a triggered attack) on the victim and the
    control, the poisons' relative feature loss on the pretrained network beside that of random ±eps noise on the
    same bases (bullseye's yardstick), how many trials were crafted in one optimisation with this one, and how many
    images the pretrained networks were trained on and whether none of them is in the victim's training set."""

    target_image_index: int
    target_position: int
    target_image_class: int
    target_class: int
    base_indices: list[int]
    setup: int | None
    bases_topped_up: int
    setups_skipped: int
    target_adversarial_loss: float
    control_adversarial_loss: float
    relative_feature_loss: float
    noise_feature_loss: float
    trials_crafted_together: int
    pretrain_size: int
    pretrain_disjoint: bool


@with_config(STRICT)
@dataclass(frozen=True)
class DefensePart:
    """A defended trial: the defense's own counts (their type is the defense's `Counts`), the undefended
    victim's correct test predictions and attack hits, and the defense's time. The row's own counts are the
    defended victim's."""

    counts: dict
    undefended_correct: int
    undefended_attack_hits: int | None
    defense_seconds: float


@with_config(STRICT)
@dataclass(frozen=True)
class TrialRow:
    """One trial. `correct`: test images the victim classifies correctly; `attack_hits` of `attack_inputs`: the
    inputs the attack aims at (triggered test images, the source class, the target image) classified as the
    attacker wants (None: an availability attack); `others_*`: the test images the attack should leave alone
    (all but a class-targeted attack's source class). Each count has its `control_` twin: the same victim trained
    on the clean training set. `max_perturbation`: the largest L-inf change of a poison from its base.
    `test_digest`: a digest of the test split's official indices (trials that share it measured the same images)."""

    trial: int
    seed: int
    n_train: int
    n_test: int
    n_poisons: int
    correct: int
    control_correct: int
    attack_hits: int | None
    attack_inputs: int | None
    control_attack_hits: int | None
    others_correct: int
    control_others_correct: int
    n_others: int
    max_perturbation: float
    craft_seconds: float
    train_seconds: float
    seconds: float
    test_digest: str
    targeted: TargetedPart | None = None
    defense: DefensePart | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, text: str) -> TrialRow:
        """A row from its stored JSON text, as `to_dict` wrote it; a missing or unknown field or a value of the
        wrong type is a ValueError (the store's version says which layout it holds)."""
        return ROW.validate_json(text)


ROW = TypeAdapter(TrialRow)
