"""The threat model (what the attacker may do) and the PoisonSet (what an attack returns)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .data import Dataset, check_images
from .data.files import atomic_write_bytes, read_npz
from .errors import ConfigError, DataError

GOALS = ("integrity", "availability")
KNOWLEDGE = ("white-box", "grey-box", "black-box")
SETTINGS = ("frozen", "finetune", "scratch")


def resolve_budget(budget: int | float, n_train: int) -> int:
    """A budget as a count of poisons: an int is a count, a float in (0, 1] a fraction of the training set."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or math.isnan(budget):
        raise ConfigError(f"budget {budget!r} must be a number: a count of poisons (e.g. 10) or a fraction of "
                          "the training set in (0, 1] (e.g. 0.01).")
    if isinstance(budget, float):
        if budget.is_integer() and budget > 1:
            raise ConfigError(f"budget {budget} is ambiguous: a fraction must lie in (0, 1]; for a count of "
                              f"poisons write the integer {int(budget)}.")
        if not 0 < budget <= 1:
            raise ConfigError(f"budget {budget} is not a fraction in (0, 1] of the training set; write a fraction "
                              "such as 0.05 for 5%, or a whole count of poisons such as 10.")
        return int(round(budget * n_train))
    if not 0 <= budget <= n_train:
        raise ConfigError(f"budget of {budget} poisons exceeds the training set of {n_train} samples; use at most "
                          f"{n_train}, or a fraction below 1.")
    return budget


def require_poisons(budget: object, threat: ThreatModel, attack: str) -> None:
    """An attack given a budget that rounds to no poison at all would change nothing: one ConfigError instead."""
    if threat.budget == 0 and attack != "none":
        least = 1 / threat.n_train
        raise ConfigError(f"budget {budget} of the {threat.n_train}-sample training set is 0 poisons: {attack} would "
                          f"change nothing. Give a count (e.g. 10) or a fraction of at least {least:.2g}.")


@dataclass(frozen=True)
class ThreatModel:
    """Everything the attacker may do, validated once here; attacks read it and never re-validate it.

    `budget` is the number of training samples the attacker replaces; `eps` the L-inf bound on how far a
    poison may move from its base (1.0 = unbounded); `clean_label` forbids changing labels.
    A class-targeted attack (`source_class` set) wants test images of `source_class` classified as
    `target_class`, and the rest classified as before. A targeted (instance) attack gets the target test
    image(s) (`target_image`, with `target_image_index` its index in the official test set and
    `target_image_class` its true class, when known) and may be told its bases (`base_indices`, positions in the
    training set). `goal` is what the attack pursues (None: nothing, the
    clean baseline).
    """

    budget: int
    n_train: int
    num_classes: int
    eps: float = 1.0
    clean_label: bool = False
    target_class: int | None = None
    goal: Literal["integrity", "availability"] | None = None
    knowledge: Literal["white-box", "grey-box", "black-box"] = "white-box"
    setting: Literal["frozen", "finetune", "scratch"] = "scratch"
    source_class: int | None = None
    target_image: torch.Tensor | None = field(default=None, repr=False)
    target_image_index: int | None = None
    base_indices: torch.Tensor | None = field(default=None, repr=False)
    target_image_class: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.budget <= self.n_train:
            raise ConfigError(f"budget of {self.budget} poisons exceeds the training set of {self.n_train} "
                              f"samples; use at most {self.n_train}.")
        if not (isinstance(self.eps, (int, float)) and 0.0 <= self.eps <= 1.0):
            raise ConfigError(f"eps {self.eps!r} must lie in [0, 1] (pixel scale; e.g. 8/255 = {8 / 255:.4f}).")
        if self.target_class is not None and not 0 <= self.target_class < self.num_classes:
            raise ConfigError(f"target class {self.target_class} does not exist: the data has classes "
                              f"0..{self.num_classes - 1}.")
        if self.source_class is not None:
            if self.target_class is None or not 0 <= self.source_class < self.num_classes:
                raise ConfigError(f"a class-targeted attack needs a source class in 0..{self.num_classes - 1} and a "
                                  f"target class; got source {self.source_class}, target {self.target_class}.")
            if self.source_class == self.target_class:
                raise ConfigError(f"source and target class are both {self.source_class}; the attack must move "
                                  "the source class to another class.")
        self._check_target()
        for name, value, allowed in (("goal", self.goal, (*GOALS, None)), ("knowledge", self.knowledge, KNOWLEDGE),
                                     ("setting", self.setting, SETTINGS)):
            if value not in allowed:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}.")

    def _check_target(self) -> None:
        """A targeted (instance) attack: target image(s) K×C×H×W and optionally the bases it must use."""
        if self.target_image is not None:
            check_images(self.target_image, "the target image")
            if self.target_class is None:
                raise ConfigError("a target image needs the adversarial class it should be classified as "
                                  "(target_class).")
        if self.target_image_class is not None and not 0 <= self.target_image_class < self.num_classes:
            raise ConfigError(f"the target image's class {self.target_image_class} does not exist: the data has "
                              f"classes 0..{self.num_classes - 1}.")
        if self.base_indices is not None:
            b = self.base_indices
            if b.dtype != torch.int64 or b.ndim != 1 or len(set(b.tolist())) != len(b) or len(b) != self.budget:
                raise ConfigError(f"base_indices must be {self.budget} distinct int64 training indices (one per "
                                  f"poison of the budget); got {len(b)}.")
            if len(b) and (int(b.min()) < 0 or int(b.max()) >= self.n_train):
                raise ConfigError(f"base_indices reach {int(b.max())}, outside the training set of {self.n_train}.")

    @classmethod
    def for_data(cls, train: Dataset, budget: int | float, **fields) -> ThreatModel:
        """A threat model against `train`, with the budget given as a count (int) or a fraction (float)."""
        return cls(budget=resolve_budget(budget, len(train)), n_train=len(train), num_classes=train.num_classes,
                   **fields)


def backdoor_labels(y: torch.Tensor, mode: str | None, target_class: int | None, num_classes: int) -> torch.Tensor:
    """All-to-one: every triggered image should become `target_class`; all-to-all: class i becomes i+1."""
    if mode == "all-to-all":
        return (y + 1) % num_classes
    return torch.full_like(y, target_class)


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: `apply(x) = (1 - mask) * x + mask * pattern` (mask in [0, 1], C×H×W or 1×H×W), or with
    `blend="add"` `clamp(x + mask * pattern, 0, 1)` (the pattern a signed change, in [-1, 1]: Turner et al.'s
    reduced-amplitude trigger adds ±amplitude).

    A patch trigger has mask 1 on the patch; a blended trigger has mask = alpha everywhere. With
    `placement="random"` the patch (the box where the mask is non-zero) is pasted at a place drawn uniformly per
    image (Saha et al. 2020 test their hidden trigger so): by `g` when given, else by `placement_seed`, so the same
    images get the same places on every call (a poisoned and a control victim see the same triggered images).
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    placement: Literal["fixed", "random"] = "fixed"
    placement_seed: int = 0
    blend: Literal["paste", "add"] = "paste"

    def __post_init__(self) -> None:
        if self.placement not in ("fixed", "random"):
            raise DataError(f"trigger placement {self.placement!r} must be 'fixed' or 'random'.")
        if self.blend not in ("paste", "add"):
            raise DataError(f"trigger blend {self.blend!r} must be 'paste' or 'add'.")

    def apply(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[-2:] != self.pattern.shape[-2:]:
            raise DataError(f"the trigger is for {tuple(self.pattern.shape[-2:])} images; got images of "
                            f"{tuple(x.shape[-2:])}.")
        mask, pattern = (self.mask, self.pattern) if self.placement == "fixed" else self.placed(len(x), g)
        mask, pattern = mask.to(x.device), pattern.to(x.device)
        if self.blend == "add":
            return (x + mask * pattern).clamp(0.0, 1.0)
        return (1 - mask) * x + mask * pattern

    def placed(self, n: int, g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask and pattern (N×·×H×W) with the patch moved to a uniformly drawn place for each of `n` images."""
        h, w = self.mask.shape[-2:]
        rows, cols = torch.nonzero(self.mask.amax(0) > 0, as_tuple=True)
        if not len(rows):
            return self.mask.expand(n, *self.mask.shape), self.pattern.expand(n, *self.pattern.shape)
        top, left = int(rows.min()), int(cols.min())
        size_h, size_w = int(rows.max()) - top + 1, int(cols.max()) - left + 1
        g = g if g is not None else torch.Generator().manual_seed(self.placement_seed)
        shift_y = torch.randint(h - size_h + 1, (n,), generator=g) - top
        shift_x = torch.randint(w - size_w + 1, (n,), generator=g) - left
        src_r = torch.arange(h)[None, :] - shift_y[:, None]  # n×H: the row each output row reads
        src_c = torch.arange(w)[None, :] - shift_x[:, None]
        inside = ((src_r >= 0) & (src_r < h))[:, :, None] & ((src_c >= 0) & (src_c < w))[:, None, :]
        src_r, src_c = src_r.clamp(0, h - 1)[:, :, None], src_c.clamp(0, w - 1)[:, None, :]

        def move(t: torch.Tensor) -> torch.Tensor:  # C×H×W -> n×C×H×W
            return (t[:, src_r, src_c] * inside).transpose(0, 1)
        return move(self.mask), move(self.pattern)


@dataclass(frozen=True)
class PoisonSet:
    """An attack's whole output: which training samples are replaced, by what, and what the attacker wants.

    `target_class` is the class the attacker aims for (all-to-one backdoors, targeted attacks; with
    `source_class` set, test images of that class should become `target_class`); with
    `backdoor_mode="all-to-all"` a triggered image of class i should be classified as i+1 (mod classes).
    With `insertion="replace"` each poison takes its base's place; with "add" (bilevel attacks, which add points
    to the training set) the poisons are appended and `indices` names the samples they were cloned from.
    A targeted attack's set names its target by `target_image_index`, the image's index in the official test set.
    """

    indices: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    attack: str
    target_class: int | None = None
    trigger: Trigger | None = None
    backdoor_mode: Literal["all-to-one", "all-to-all"] | None = None
    target_image_index: int | None = None
    params: dict = field(default_factory=dict)
    insertion: Literal["replace", "add"] = "replace"
    source_class: int | None = None

    def __post_init__(self) -> None:
        n = len(self.indices)
        if self.indices.dtype != torch.int64 or self.indices.ndim != 1 or len(set(self.indices.tolist())) != n:
            raise DataError("PoisonSet.indices must be distinct int64 training indices.")
        if len(self.x) != n or len(self.y) != n or self.y.dtype != torch.int64:
            raise DataError(f"PoisonSet holds {n} indices, {len(self.x)} images and {len(self.y)} labels; each "
                            "poison needs one of each (labels int64).")
        if n:
            check_images(self.x, "PoisonSet.x")
        if self.backdoor_mode == "all-to-one" and self.target_class is None:
            raise DataError("an all-to-one backdoor needs a target_class.")
        if self.source_class is not None and self.target_class is None:
            raise DataError("a class-targeted poison set (source_class) needs a target_class.")
        if self.insertion not in ("replace", "add"):
            raise DataError(f"PoisonSet.insertion must be 'replace' or 'add'; got {self.insertion!r}.")

    def __len__(self) -> int:
        return len(self.indices)

    def apply(self, train: Dataset) -> Dataset:
        """The poisoned training set: `train` with the poisons in place of their bases."""
        if len(self) and (int(self.indices.max()) >= len(train) or int(self.indices.min()) < 0):
            bad = int(self.indices.min()) if int(self.indices.min()) < 0 else int(self.indices.max())
            raise DataError(f"the poison set replaces training index {bad}, outside the training set's 0.."
                            f"{len(train) - 1}: it was crafted for other data (or damaged).")
        if len(self) and self.x.shape[1:] != train.x.shape[1:]:
            raise DataError(f"the poisons are {tuple(self.x.shape[1:])} images; the training set holds "
                            f"{tuple(train.x.shape[1:])} images.")
        if self.insertion == "add":
            return train.with_added(self.x, self.y, train.index[self.indices])
        return train.with_samples(self.indices, self.x, self.y)

    def is_poison(self, poisoned: Dataset) -> torch.Tensor:
        """True for the rows of the poisoned training set `poisoned` (= `self.apply(train)`) that are poisons."""
        mask = torch.zeros(len(poisoned), dtype=torch.bool)
        if len(self):
            n_clean = len(poisoned) - (len(self) if self.insertion == "add" else 0)
            mask[n_clean + torch.arange(len(self)) if self.insertion == "add" else self.indices] = True
        return mask

    def perturbation(self, train: Dataset) -> float:
        """The largest L-inf change from a poison's base (the training image it replaces or was cloned from)."""
        return float((self.x - train.x[self.indices]).abs().max()) if len(self) else 0.0

    def backdoor_targets(self, y: torch.Tensor) -> torch.Tensor:
        """The label the attacker wants for triggered images whose true labels are `y`."""
        return backdoor_labels(y, self.backdoor_mode, self.target_class, self.num_classes)

    def save(self, path: str | Path) -> Path:
        """Write `path` (.npz: poisons, indices, trigger, and the metadata as JSON) and a readable .json beside it."""
        path = Path(path).with_suffix(".npz")
        meta = {"format": FORMAT, "num_classes": self.num_classes, "attack": self.attack,
                "target_class": self.target_class, "backdoor_mode": self.backdoor_mode,
                "target_image_index": self.target_image_index, "params": self.params, "n_poisons": len(self),
                "insertion": self.insertion, "source_class": self.source_class}
        if self.trigger is not None and self.trigger.placement != "fixed":
            meta |= {"trigger_placement": self.trigger.placement, "trigger_placement_seed": self.trigger.placement_seed}
        if self.trigger is not None and self.trigger.blend != "paste":
            meta |= {"trigger_blend": self.trigger.blend}
        arrays = {"indices": self.indices.numpy(), "x": self.x.numpy(), "y": self.y.numpy(),
                  "metadata": np.array(json.dumps(meta, default=str))}
        if self.trigger is not None:
            arrays |= {"trigger_mask": self.trigger.mask.numpy(), "trigger_pattern": self.trigger.pattern.numpy()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str).encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> PoisonSet:
        """Read a PoisonSet written by `save`, checked whole: a readable npz (no pickles are loaded) with the
        arrays of its metadata's types and sizes, and the .json manifest beside it saying the same."""
        path = Path(path)
        arrays = read_npz(path, "a poison set")
        if "metadata" not in arrays or not {"indices", "x", "y"} <= arrays.keys():
            raise DataError(f"{path} holds arrays {sorted(arrays)}, not a poisonlab poison set (indices, x, y, "
                            "metadata); craft it with `poisonlab craft` or PoisonSet.save.")
        meta = read_manifest(path, arrays["metadata"])
        target_image_index = read_format(path, meta)
        indices, x, y = arrays["indices"], arrays["x"], arrays["y"]
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer) or y.ndim != 1 or \
                not np.issubdtype(y.dtype, np.integer) or x.ndim != 4 or x.dtype != np.float32:
            raise DataError(f"{path}: expected integer indices and labels (1-D) and float32 N×C×H×W poisons; got "
                            f"indices {indices.dtype}{indices.shape}, y {y.dtype}{y.shape}, x {x.dtype}{x.shape}.")
        if not len(indices) == len(x) == len(y) == meta["n_poisons"]:
            raise DataError(f"{path} holds {len(indices)} indices, {len(x)} poisons and {len(y)} labels; its "
                            f"metadata says {meta['n_poisons']} poisons. The file is damaged: craft it again.")
        if len(y) and (y.min() < 0 or y.max() >= meta["num_classes"]):
            raise DataError(f"{path}: poison labels span {y.min()}..{y.max()}, outside the set's "
                            f"{meta['num_classes']} classes.")
        trigger = None
        if "trigger_mask" in arrays or "trigger_pattern" in arrays:
            if not {"trigger_mask", "trigger_pattern"} <= arrays.keys():
                raise DataError(f"{path} holds half a trigger (trigger_mask and trigger_pattern go together).")
            trigger = Trigger(torch.from_numpy(arrays["trigger_mask"]), torch.from_numpy(arrays["trigger_pattern"]),
                              meta["trigger_placement"], meta["trigger_placement_seed"], meta["trigger_blend"])
        return cls(torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(x),
                   torch.from_numpy(y.astype(np.int64)), meta["num_classes"], meta["attack"], meta["target_class"],
                   trigger, meta["backdoor_mode"], target_image_index, meta["params"], meta["insertion"],
                   meta["source_class"])


class PoisonSetMeta(BaseModel):
    """The metadata a PoisonSet's npz and its .json manifest both hold (format 1 named its target `target_index`)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    format: str
    num_classes: int = Field(ge=2)
    attack: str
    n_poisons: int = Field(ge=0)
    target_class: int | None = Field(None, ge=0)
    backdoor_mode: Literal["all-to-one", "all-to-all"] | None = None
    target_image_index: int | None = Field(None, ge=0)
    target_index: int | None = None
    params: dict = {}
    insertion: Literal["replace", "add"] = "replace"
    source_class: int | None = Field(None, ge=0)
    trigger_placement: Literal["fixed", "random"] = "fixed"
    trigger_placement_seed: int = 0
    trigger_blend: Literal["paste", "add"] = "paste"


def read_manifest(path: Path, metadata: np.ndarray) -> dict:
    """The set's metadata, checked for type, and equal to the .json manifest written beside it."""
    manifest_path = path.with_suffix(".json")
    try:
        meta = json.loads(str(metadata))
        checked = PoisonSetMeta.model_validate(meta).model_dump()
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: its metadata is not a poison set's ({short(exc)}); craft it again.") from None
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path} has no manifest {manifest_path.name} beside it (PoisonSet.save writes both); copy "
                        "the .json with the .npz, or craft the set again.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{manifest_path} is not the set's JSON manifest ({exc}); copy it again with the .npz, or "
                        "craft the set again.") from None
    if manifest != meta:
        differ = sorted(k for k in set(manifest) | set(meta) if manifest.get(k) != meta.get(k)) \
            if isinstance(manifest, dict) else ["(the whole manifest)"]
        raise DataError(f"{manifest_path} and {path.name} disagree on {', '.join(differ)}; one was changed or "
                        "they belong to different sets: copy the pair again, or craft the set again.")
    return checked


def short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    return str(exc)


FORMAT = "poisonlab.PoisonSet/2"


def read_format(path: Path, meta: dict) -> int | None:
    """The set's official target image index, after checking its format. Format 1 named a targeted set's target by
    its position in the split it was crafted on, which another loader may order differently: such a set is
    refused (craft it again); format-1 sets without a target load as they are."""
    if meta.get("format") == "poisonlab.PoisonSet/1":
        if meta.get("target_index") is not None:
            raise DataError(f"{path} is a format-1 poison set whose target is a position in the split it was crafted "
                            f"on, not an official index; craft it again with this poisonlab ({FORMAT}).")
        return None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} has format {meta.get('format')!r}; this poisonlab reads {FORMAT!r} (and "
                        "'poisonlab.PoisonSet/1' without a target).")
    return meta["target_image_index"]
