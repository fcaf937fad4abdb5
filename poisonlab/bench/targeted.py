"""A targeted clean-label trial (the protocol of "Just How Toxic is Data Poisoning?", Schwarzschild et al. 2021):
pick a target test image, the adversarial class and the bases; craft against surrogates of the threat model's
knowledge; train the victim of the setting on the poisoned set and, as the control, on the clean set; success
is the victim classifying the target as the adversarial class. Pure computation; no files but the model cache
(which also keeps each scenario's first-trial poisons)."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attacks.feature_space import adversarial_labels, project, relative_polytope_loss
from ..data import Dataset, Splits
from ..device import device_of, resolve_device
from ..errors import ConfigError
from ..models import Classifier, ModelCache, build_model, config_hash, predict, train
from ..models.train import train_head
from ..seeding import derive_seed, generator
from ..threat import PoisonSet, ThreatModel, resolve_budget
from .scenario import Scenario
from .setups import load_setups, map_bases, usable_setups

BLACK_BOX = ("convnet-wide", "resnet8")  # other architectures than the victim's, pretrained on the same data
DATA_FIELDS = {"dataset", "classes", "train_size", "test_size", "val_size", "sampling"}
_PRETRAINED: dict[str, Classifier] = {}  # per process: pretrained networks, loaded once for all trials
_FEATURES: dict[tuple[int, int], tuple[Classifier, Dataset, torch.Tensor]] = {}  # per process: clean split features


@dataclass(frozen=True)
class Target:
    position: int  # in the loaded test split
    adversarial_class: int
    bases: torch.Tensor | None  # positions in the training split (from a setups file), or None: the attack draws
    setup: int | None = None
    topped_up: int = 0
    setups_skipped: int = 0


def pretrained(scenario: Scenario, name: str, seed: int, data: Splits, cache_dir: str | None) -> Classifier:
    """`name` trained on the clean training set with the pretraining recipe; cached by its config."""
    recipe = scenario.pretrain_recipe
    config = {"pretrained": name, "seed": seed, "data_seed": scenario.seed,
              "recipe": recipe.model_dump(mode="json"), **scenario.model_dump(mode="json", include=DATA_FIELDS)}
    if scenario.device != "cpu":  # a GPU's numbers differ from the CPU's: its networks are cached apart
        config["device"] = str(resolve_device(scenario.device))

    def build() -> Classifier:
        return build_model(name, data.train.shape, data.train.num_classes, seed=seed).to(
            resolve_device(scenario.device))

    def fit(model: Classifier) -> None:
        train(model, data.train, recipe, seed=seed)

    key = f"{cache_dir}/{config_hash(config)}"
    if key not in _PRETRAINED:
        if len(_PRETRAINED) >= 8:
            _PRETRAINED.clear()
        if cache_dir is None:
            model = build()
            fit(model)
            _PRETRAINED[key] = model.eval()
        else:
            _PRETRAINED[key] = ModelCache(cache_dir).get(config, build, fit)
    return _PRETRAINED[key]


def surrogates(scenario: Scenario, data: Splits, reference: Classifier, cache_dir: str | None) -> list[Classifier]:
    """White-box: the victim's own pretrained network. Grey-box: the same architecture pretrained with another
    seed. Black-box: other architectures (`scenario.surrogates`, default BLACK_BOX without the victim's)."""
    if scenario.knowledge == "white-box":
        return [reference]
    names = scenario.surrogates or ([scenario.model] if scenario.knowledge == "grey-box"
                                    else [m for m in BLACK_BOX if m != scenario.model])
    return [pretrained(scenario, name, derive_seed(scenario.seed, scenario.knowledge, i), data, cache_dir)
            for i, name in enumerate(names)]


def choose_target(scenario: Scenario, trial: int, data: Splits, reference: Classifier, seed: int) -> Target:
    """From the setups file (the trial-th setup whose target is in the data), or drawn with the trial's seed:
    a test image the pretrained network classifies correctly and another class."""
    g = generator(seed, "target")
    if scenario.setups is not None:
        usable = usable_setups(load_setups(scenario.setups), data.test)
        if trial >= len(usable):
            raise ConfigError(f"{scenario.setups} has {len(usable)} setups whose target is in the loaded test split; "
                              f"ask for at most {len(usable)} trials.")
        index, setup = usable[trial]
        position = int(torch.nonzero(data.test.index == setup.target_index)[0, 0])
        bases, topped_up = map_bases(setup, data.train, budget_of(scenario, data.train), g)
        skipped = len(load_setups(scenario.setups)) - len(usable)
        return Target(position, setup.base_class, bases, index, topped_up, skipped)
    correct = torch.nonzero(test_predictions(scenario, reference, reference, data.test) == data.test.y).squeeze(1)
    position = int(correct[torch.randint(len(correct), (1,), generator=g)])
    shift = 1 + int(torch.randint(data.test.num_classes - 1, (1,), generator=g))
    return Target(position, (int(data.test.y[position]) + shift) % data.test.num_classes, None)


def budget_of(scenario: Scenario, train_set: Dataset) -> int:
    return resolve_budget(scenario.budget, len(train_set))


def train_victim(scenario: Scenario, reference: Classifier, train_set: Dataset, poison: PoisonSet | None,
                 seed: int) -> Classifier:
    """The victim of the setting trained on `train_set` with `poison` in it (None: the clean control)."""
    poisoned = poison.apply(train_set) if poison is not None else train_set
    if scenario.setting == "frozen":
        features = split_features(reference, train_set)
        if poison is not None and len(poison):
            with torch.no_grad():
                features = features.clone()
                features[poison.indices.to(features.device)] = reference.eval().features(
                    poison.x.to(features.device))
        model = fresh_head(reference, seed)
        return train_head(model, features, poisoned.y, scenario.recipe, seed)
    return train(victim_start(scenario, reference, train_set, seed), poisoned, scenario.recipe, seed=seed)


def victim_start(scenario: Scenario, reference: Classifier, train_set: Dataset, seed: int) -> Classifier:
    """Fine-tuning starts from the pretrained weights, training from scratch from the trial's initialisation."""
    if scenario.setting == "finetune":
        return copy.deepcopy(reference)
    return build_model(scenario.model, train_set.shape, train_set.num_classes, seed=seed).to(device_of(reference))


def fresh_head(reference: Classifier, seed: int) -> Classifier:
    model = copy.deepcopy(reference).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.head.reset_parameters()
    return model


def split_features(reference: Classifier, split: Dataset) -> torch.Tensor:
    """The pretrained network's features of a clean split (training or test images), computed once per network
    and split (memoised by the objects, in chunks of 1,024 as `predict` runs them; the entry holds both, so
    their ids cannot be reused while the features are kept)."""
    key = (id(reference), id(split))
    if key not in _FEATURES:
        if len(_FEATURES) >= 4:
            _FEATURES.clear()
        device = device_of(reference)
        with torch.no_grad():
            features = torch.cat([reference.eval().features(c.to(device)) for c in split.x.split(1024)]) \
                if len(split) else torch.empty(0, reference.feature_dim, device=device)
        _FEATURES[key] = (reference, split, features)
    return _FEATURES[key][2]


def test_predictions(scenario: Scenario, model: Classifier, reference: Classifier, test: Dataset) -> torch.Tensor:
    """`predict(model, test.x)`. The pretrained network, and a frozen victim (its extractor is the pretrained
    one, only the head is new), read the memoised test features instead of running the extractor again."""
    if model is reference or scenario.setting == "frozen":
        with torch.no_grad():
            return model.eval().head(split_features(reference, test)).argmax(1).cpu()
    return predict(model, test.x)


def control_victim(scenario: Scenario, trial: int, reference: Classifier, data: Splits, seed: int,
                   cache_dir: str | None) -> Classifier:
    """The victim trained on the clean set (the poisons' un-optimised bases): cached when training is costly."""
    if scenario.setting == "frozen" or cache_dir is None:
        return train_victim(scenario, reference, data.train, None, seed)
    config = {"control": trial, "setting": scenario.setting, "seed": scenario.seed, "model": scenario.model,
              "recipe": scenario.recipe.model_dump(mode="json"),
              "pretrain": scenario.pretrain_recipe.model_dump(mode="json"),
              **scenario.model_dump(mode="json", include=DATA_FIELDS)}
    if scenario.device != "cpu":
        config["device"] = str(resolve_device(scenario.device))
    return ModelCache(cache_dir).get(config, lambda: victim_start(scenario, reference, data.train, seed),
                                     lambda model: train(model, data.train, scenario.recipe, seed=seed))


@torch.no_grad()
def adversarial_loss(model: Classifier, target_image: torch.Tensor, adversarial_class: int) -> float:
    """The cross-entropy of the target toward the adversarial class (lower = closer to flipping)."""
    logits = model.eval()(target_image.to(device_of(model)))
    return float(torch.nn.functional.cross_entropy(logits, adversarial_labels(logits, adversarial_class)))


@dataclass(frozen=True)
class Crafted:
    reference: Classifier
    target: Target
    target_image: torch.Tensor
    poison: PoisonSet
    seconds: float


def craft_targeted(scenario: Scenario, trial: int, seed: int, data: Splits, threat: ThreatModel, attack,
                   cache_dir: str | None) -> Crafted:
    """Pretrain (or load) the networks, draw the trial's target and craft the poisons against the surrogates."""
    return craft_targeted_group(scenario, [trial], [seed], data, threat, attack, cache_dir)[0]


def craft_targeted_group(scenario: Scenario, trials: Sequence[int], seeds: Sequence[int], data: Splits,
                         threat: ThreatModel, attack, cache_dir: str | None) -> list[Crafted]:
    """`craft_targeted` for several trials of a scenario. An attack with `craft_group` (the feature-space
    attacks) crafts them in one optimisation, each trial's poisons those it would get alone. Sharing the forward
    and backward passes pays on a GPU, which one trial's few poisons leave mostly idle; on a small CPU it does
    not (docs/benchmarks.md). Each trial is charged an equal share of the crafting time."""
    reference = pretrained(scenario, scenario.model, scenario.seed, data, cache_dir)
    models = surrogates(scenario, data, reference, cache_dir)
    surrogate = models if len(models) > 1 else models[0]
    targets = [choose_target(scenario, trial, data, reference, seed) for trial, seed in zip(trials, seeds, strict=True)]
    threats = [dataclasses.replace(threat, target_class=t.adversarial_class, target_index=t.position,
                                   target_image=data.test.x[t.position:t.position + 1], base_indices=t.bases)
               for t in targets]
    start = time.perf_counter()
    if hasattr(attack, "craft_group"):
        poisons = attack.craft_group(data.train, threats, surrogate, seeds)
        share = (time.perf_counter() - start) / len(trials)
        return [Crafted(reference, t, th.target_image, p, share) for t, th, p in zip(targets, threats, poisons,
                                                                                      strict=True)]
    crafted = []
    for target, crafting, seed in zip(targets, threats, seeds, strict=True):
        poison = attack.craft(data.train, crafting, surrogate, seed=seed)
        crafted.append(Crafted(reference, target, crafting.target_image, poison, time.perf_counter() - start))
        start = time.perf_counter()
    return crafted


def run_targeted_trials(scenario: Scenario, trials: Sequence[int], seeds: Sequence[int], data: Splits,
                        threat: ThreatModel, attack, cache_dir: str | None) -> list[dict]:
    """Trials of a targeted attack, crafted together where the attack can (`craft_targeted_group`), each
    victim trained and measured on its own; the returned rows are what the report aggregates."""
    group = craft_targeted_group(scenario, trials, seeds, data, threat, attack, cache_dir)
    if cache_dir is not None and 0 in trials:
        group[list(trials).index(0)].poison.save(kept_poisons_path(scenario, cache_dir))
    together = {"trials_crafted_together": len(trials) if hasattr(attack, "craft_group") else 1}
    return [measure_targeted(scenario, trial, seed, data, threat, crafted, cache_dir) | together
            for trial, seed, crafted in zip(trials, seeds, group, strict=True)]


def kept_poisons_path(scenario: Scenario, cache_dir: str | Path) -> Path:
    """Where a run keeps its scenario's first-trial poisons, beside the cached networks: the suite's figure
    reads them instead of crafting again, and anyone may train on them (`PoisonSet.load`)."""
    return Path(cache_dir) / f"poisons-{scenario.hash}-trial0.npz"


def measure_targeted(scenario: Scenario, trial: int, seed: int, data: Splits, threat: ThreatModel,
                     crafted: Crafted, cache_dir: str | None) -> dict:
    """Train the trial's victim on its poisons and its control on the clean set; the trial's counts and timings."""
    reference, target, target_image, poison = crafted.reference, crafted.target, crafted.target_image, crafted.poison
    start = time.perf_counter()
    victim = train_victim(scenario, reference, data.train, poison, seed)
    trained = time.perf_counter()
    control = control_victim(scenario, trial, reference, data, seed, cache_dir)
    hit = int(predict(victim, target_image)) == target.adversarial_class
    control_hit = int(predict(control, target_image)) == target.adversarial_class
    losses = [adversarial_loss(model, target_image, target.adversarial_class) for model in (victim, control)]
    bases = data.train.x[poison.indices]
    noise = project(bases + threat.eps * torch.sign(torch.randn(poison.x.shape, generator=generator(seed, "noise"))),
                    bases, threat.eps)
    return {
        "seed": seed, "n_train": len(data.train), "n_test": len(data.test), "n_poisons": len(poison),
        "correct": int((test_predictions(scenario, victim, reference, data.test) == data.test.y).sum()),
        "clean_victim_correct": int((test_predictions(scenario, control, reference, data.test) == data.test.y).sum()),
        "asr_hits": int(hit), "asr_eligible": 1, "clean_victim_asr_hits": int(control_hit),
        "target_index": int(data.test.index[target.position]), "target_class": int(data.test.y[target.position]),
        "adversarial_class": target.adversarial_class, "setup": target.setup, "bases_topped_up": target.topped_up,
        "setups_skipped": target.setups_skipped,
        "target_adversarial_loss": losses[0], "control_adversarial_loss": losses[1],
        "relative_feature_loss": relative_polytope_loss([reference], poison.x, target_image),
        "noise_feature_loss": relative_polytope_loss([reference], noise, target_image),
        "max_perturbation": float((poison.x - bases).abs().max()) if len(poison) else 0.0,
        "craft_seconds": crafted.seconds, "train_seconds": trained - start,
        "seconds": crafted.seconds + time.perf_counter() - start,
    }
