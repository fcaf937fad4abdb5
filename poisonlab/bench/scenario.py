"""A scenario: data, model, recipe, attack and threat model, trials and seed; it round-trips through YAML."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, did_you_mean, read_file
from ..models import MODELS, TrainRecipe, config_hash
from ..models.train import strip_added

HASH_EXCLUDES = {"name", "trials", "data_root", "pretrain_data_root"}
# Fields added after results were first stored, with their defaults: hashed only when set otherwise. A new
# field goes here, so that upgrading poisonlab leaves every stored run resumable.
ADDED_FIELDS = {"pretrain_dataset": None, "pretrain_data_root": None}
RECIPE_KEYS = tuple(TrainRecipe.model_fields)
# The victim's default training by protocol and setting. "fast": a frozen extractor retrains only the linear head
# (200 full-batch Adam steps on precomputed features), fine-tuning trains every layer briefly from the pretrained
# weights. "jht": the victims of "Just How Toxic is Data Poisoning?" (benchmark_test.py / poison_test.py): SGD, lr
# 0.01, momentum 0.9 (not Nesterov), weight decay 2e-4, batch 128, 40 epochs, lr x0.1 at epoch 30, random crops
# padded with black (torchvision's RandomCrop(32, padding=4)) and flips; the frozen head reads 8 augmented views
# of each image, computed once. From scratch, each model has its own default recipe (MODELS[name].recipe; suites
# give their own).
JHT_VICTIM = TrainRecipe(epochs=40, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False,
                         weight_decay=2e-4, schedule="step", milestones=(30,), augment="flip-crop", pad="zeros")
SETTING_RECIPES = {
    "fast": {"frozen": TrainRecipe(epochs=200, batch_size=1 << 20, lr=0.01, trainable="head"),
             "finetune": TrainRecipe(epochs=5, batch_size=128, lr=1e-4, augment="flip-crop")},
    "jht": {"frozen": JHT_VICTIM.model_copy(update={"trainable": "head", "views": 8}), "finetune": JHT_VICTIM},
}
# How the network a targeted attack starts from is pretrained on the clean training set (frozen and finetune
# victims and every surrogate): 30 epochs, Adam 3e-3, cosine, flips and crops (70% on the CIFAR-10 subset).
DEFAULT_PRETRAIN = TrainRecipe(epochs=30, batch_size=128, lr=3e-3, schedule="cosine", augment="flip-crop")
# protocol "jht" pretrains its transfer extractors by SGD with step drops, flips and crops, as JHT's train_model.py
# (200 epochs, x0.1 at 100 and 150, weight decay 2e-4, lr 0.01 by default); here half the epochs (CPU time) at
# lr 0.1 and weight decay 5e-4 (the from-scratch victims' recipe), crops padded by reflection (JHT: black). It
# stands in for JHT's CIFAR-100 ResNet-18: on the CIFAR-10 subset's 2,000 pretraining images this recipe gives the
# more augmentation-invariant extractor that JHT's frozen victim (a head on augmented views) needs; with black
# padding here too the frozen victims lose a point of accuracy and bullseye's 4/24 at 16/255 falls to 0/24
# (docs/targeted.md).
JHT_PRETRAIN = TrainRecipe(epochs=100, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                           weight_decay=5e-4, schedule="step", milestones=(50, 75), augment="flip-crop")


class Scenario(BaseModel):
    """One cell of a benchmark; its hash (of everything that changes results) names its stored trials."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = None
    dataset: str = "digits"
    data_root: str | None = None
    classes: list[int] | None = None
    train_size: int | None = Field(None, ge=1)
    test_size: int | None = Field(None, ge=1)
    val_size: int | None = Field(None, ge=1)
    sampling: Literal["random", "first", "first-per-class"] = "random"
    model: str = "convnet"
    recipe: TrainRecipe = TrainRecipe()
    attack: str = "none"
    attack_params: dict = Field(default_factory=dict)
    budget: int | float = 0
    eps: float = 1.0
    target_class: int | None = None
    source_class: int | None = None
    clean_label: bool = False
    goal: Literal["integrity", "availability"] | None = None
    knowledge: Literal["white-box", "grey-box", "black-box"] = "white-box"
    setting: Literal["frozen", "finetune", "scratch"] = "scratch"
    defense: str = "none"
    defense_params: dict = Field(default_factory=dict)
    pretrain: TrainRecipe | None = None
    protocol: Literal["fast", "jht"] = "fast"
    pretrain_data: Literal["victim", "disjoint"] | None = None
    pretrain_size: int | None = Field(None, ge=1)
    pretrain_dataset: str | None = None  # another data set's training split to pretrain on (JHT: cifar100)
    pretrain_data_root: str | None = None
    surrogates: list[str] | None = None
    setups: str | None = None
    device: str = "cpu"
    trials: int = Field(1, ge=1, le=10**6)
    seed: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def setting_recipe(cls, data):
        """An unset recipe (or unset recipe keys) take the protocol's default for the setting (SETTING_RECIPES);
        from scratch, the model's own (MODELS[model].recipe). The pretraining data follow the protocol: JHT's
        extractors never saw the victim's training set ("disjoint"), the fast protocol's are pretrained on it."""
        if isinstance(data, dict):
            model, setting = data.get("model", "convnet"), data.get("setting", "scratch")
            protocol = data.get("protocol", "fast")
            scratch = MODELS[model].recipe if isinstance(model, str) and model in MODELS else TrainRecipe()
            recipes = SETTING_RECIPES.get(protocol, {}) if isinstance(protocol, str) else {}
            default = recipes[setting] if isinstance(setting, str) and setting in recipes else scratch
            transfer = protocol == "jht" and setting in ("frozen", "finetune")  # JHT's scratch attacker knows
            if data.get("pretrain_data") is None and data.get("pretrain_dataset") is None and \
                    isinstance(protocol, str) and protocol in SETTING_RECIPES:
                data = {**data, "pretrain_data": "disjoint" if transfer else "victim"}
            if transfer and data.get("pretrain") is None:
                data = {**data, "pretrain": JHT_PRETRAIN.model_dump()}
            given = data.get("recipe")
            if given is None or isinstance(given, dict):
                data = {**data, "recipe": {**default.model_dump(), **(given or {})}}
        return data

    @field_validator("eps")
    @classmethod
    def eps_in_range(cls, eps: float) -> float:
        if not 0 <= eps <= 1:  # NaN too
            raise ValueError(f"eps must lie in [0, 1] (pixel scale; 8/255 = {8 / 255:.4f}, 1 = unbounded)")
        return eps

    @field_validator("classes")
    @classmethod
    def distinct_classes(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None and (len(set(classes)) != len(classes) or len(classes) < 2):
            raise ValueError("keep at least two classes and none twice (e.g. 0,4)")
        return classes

    @property
    def hash(self) -> str:
        return self.hash_of(set(type(self).model_fields) - HASH_EXCLUDES)

    def hash_of(self, fields: set[str]) -> str:
        """The hash of some of the fields (a setups file by its content, not where it lies). A field added after
        results were first stored (ADDED_FIELDS) counts only when it is set to something other than its
        default, so a run stored before it existed keeps its hash and resumes."""
        values = {k: v for k, v in self.model_dump(mode="json", include=fields).items()
                  if k not in ADDED_FIELDS or v != ADDED_FIELDS[k]}
        for key in ("recipe", "pretrain"):
            if values.get(key) is not None:
                values[key] = strip_added(values[key])
        if values.get("setups") is not None:
            values["setups"] = file_digest(self.setups)
        return config_hash(values)

    @property
    def pretrain_recipe(self) -> TrainRecipe:
        return self.pretrain or DEFAULT_PRETRAIN

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        budget = str(self.budget)  # 1.0 (all of the training set) is not 1 (one poison)
        label = f"{self.dataset}/{self.model}/{self.attack}" + (f"@{budget}" if self.attack != "none" else "")
        return label + (f"+{self.defense}" if self.defense != "none" else "")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def file_digest(path: str) -> str:
    return hashlib.sha256(read_file(path, "the setups file")).hexdigest()[:16]


def scenario_from_dict(data: dict, source: str = "scenario") -> Scenario:
    """Validate a scenario dict, turning pydantic's report into one actionable ConfigError."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe(e) for e in exc.errors())
        raise ConfigError(f"{source} is not a valid scenario: {problems}.") from None


def describe(error: dict) -> str:
    """One pydantic error as `field: what is wrong (got X)`, with the valid keys or a close match for a typo."""
    loc = ".".join(map(str, error["loc"])) or "scenario"
    if error["type"] == "extra_forbidden":
        key, model = str(error["loc"][-1]), RECIPE_KEYS if error["loc"][0] in ("recipe", "pretrain") else None
        valid = list(model or Scenario.model_fields)
        return f"unknown key {loc!r}{did_you_mean(key, valid)}; valid keys are: {', '.join(valid)}"
    text = f"{loc}: {error['msg']}"
    if error["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return f"{text} (got {error['input']!r}){did_you_mean(error['input'], choices)}"
    if not isinstance(error.get("input"), dict) and error["type"] != "missing":
        text += f" (got {error['input']!r})"
    return text


def load_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(read_file(path, "the scenario file"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of scenario fields (dataset: ..., attack: ...).")
    return data


def parse_budget(text: str) -> int | float:
    """'10' is a count of poisons; '0.01' a fraction of the training set."""
    if re.fullmatch(r"\s*\d+\s*", text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        raise ConfigError(f"budget {text!r} is not a count or a fraction of poisons: give a count (10) or a "
                          "fraction of the training set in (0, 1] (0.01).")
    return value


def parse_classes(text: str) -> list[int]:
    """'0,4' -> [0, 4]."""
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise ConfigError(f"classes {text!r} must be two or more class ids separated by commas, e.g. 0,4.") from None


def parse_params(pairs: list[str], kind: str = "attack") -> dict:
    """KEY=VALUE pairs, each value read as YAML (so 3 is an int, 0.2 a float, white a string); `kind` names
    them in errors ("attack" for -p, "defense" for -d)."""
    flag = {"attack": "-p", "defense": "-d"}.get(kind, "")
    params = {}
    for pair in pairs:
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise ConfigError(f"{kind} parameter {pair!r} must be KEY=VALUE, e.g. {flag} {EXAMPLES.get(kind, 'k=1')}.")
        if key in params:
            raise ConfigError(f"{kind} parameter {key!r} is given more than once ({flag} {key}=...); give it once.")
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{kind} parameter {key}={value!r}: the value is not a number, word or YAML value; "
                              f"quote it or fix it.") from None
    return params


def merge_mapping(fields: dict, key: str, given: dict, source: str) -> dict | None:
    """`fields[key]` (a mapping from a YAML file) updated by `given` (the flags), or None when both are empty."""
    base = fields.get(key) or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{source}: {key} must be a mapping of KEY: VALUE pairs; got {base!r}.")
    return {**base, **given} or None


EXAMPLES = {"attack": "patch_size=4", "defense": "removal=0.1"}
