"""Sleeper Agent (Souri et al., NeurIPS 2022): a hidden-trigger backdoor for networks trained from scratch. Target-class
training images are perturbed, labels kept, so that their training gradient matches the gradient of triggered
source-class images labelled as the target; the trigger never appears in the training data."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from pydantic import ValidationError
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from ..data import Dataset
from ..device import device_of
from ..errors import ConfigError
from ..models import Classifier, for_second_order
from ..models.train import TrainRecipe, train
from ..seeding import derive_seed, generator
from ..threat import PoisonSet, ThreatModel, Trigger
from .badnets import patch_trigger
from .base import GradientAttack, check_choice, choose_bases
from .feature_space import ensemble
from .witches_brew import alignment, match, parameter_gradient


@dataclass(frozen=True)
class SleeperAgent(GradientAttack):
    """min over poisons (eps box) of 1 - cos(∇θ L(poisons, their labels), ∇θ L(s̃, target class)), s̃ the source
    class's training images with the trigger at a random place (Souri et al. 2022, eq. 3; the official
    `hsouri/Sleeper-Agent`, whose defaults these are):

    - the poisons are the `budget` target-class training images with the largest gradient norm on the surrogate
      (`selection="max-gradient"`; averaged over an ensemble) or drawn at random ("random");
    - the source gradient is the mean over `sources` source-class training images (0: all of them, as the official
      5,000 are all of CIFAR-10's class), each triggered once at a place drawn with the seed;
    - signed Adam at `lr` (the official 0.1 on standardised images, ≈ 0.025 on [0, 1] pixels), divided by 10 at 3/8,
      5/8 and 7/8 of `steps` (250), from a Gaussian start of deviation eps clipped to the box (`init="randn"`), with
      a differentiable flip and crop of the poisons at each step when `augment` (the runner follows the victim);
    - from scratch (the threat model's setting), every `retrain_every` steps (50: at 50, 100, 150, 200 of 250) the
      surrogates are re-initialised and retrained on the training set holding the current poisons by `recipe`
      (the runner passes the recipe the surrogate was pretrained by; `retrain_epochs` > 0 shortens it), and the
      source gradient is recomputed on them.

    The trigger: a `patch_size` square of seeded random bits (`pattern="binary"`, the official `_create_patch`;
    "noise": uniform), pasted at a random place on each triggered image, at test time too. Class-level protocol
    only: success is the source class's test images with the trigger classified as the target class (without a
    source class, the sources and the test images are those of every other class).

    Departures: the trigger is seeded random bits, not the official `trigger_10.png` image; the poisons take one
    step per iteration as one batch (official: batches of 512 accumulated, the same for budgets up to 512);
    outside the from-scratch setting the surrogates are not retrained (official option: warm-start fine-tuning)."""

    name: ClassVar[str] = "sleeper-agent"
    summary: ClassVar[str] = ("hidden-trigger backdoor from scratch: poisons' gradient matches triggered sources', "
                              "surrogate retrained while crafting (Souri et al. 2022)")
    honours: ClassVar[frozenset[str]] = frozenset({"eps", "target_class", "source_class"})
    retrains_surrogate: ClassVar[bool] = True

    steps: int = 250
    lr: float = 0.025
    init: str = "randn"
    augment: bool = True
    restarts: int = 1
    retrain_every: int = 50
    retrain_epochs: int = 0
    recipe: TrainRecipe | None = None
    selection: str = "max-gradient"
    sources: int = 0
    patch_size: int = 8
    pattern: str = "binary"
    pattern_seed: int = 0

    def __post_init__(self) -> None:
        check_choice("selection", self.selection, ("max-gradient", "random"))
        check_choice("pattern", self.pattern, ("binary", "noise"))
        check_choice("init", self.init, ("randn", "uniform"))
        if isinstance(self.recipe, dict):
            try:
                object.__setattr__(self, "recipe", TrainRecipe(**self.recipe))
            except ValidationError as e:
                problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ConfigError(f"sleeper-agent's retraining recipe is invalid ({problems}).") from None
        if min(self.steps, self.restarts, self.patch_size) < 1 or self.lr <= 0 or \
                min(self.retrain_every, self.retrain_epochs, self.sources) < 0:
            raise ConfigError(f"sleeper-agent needs steps, restarts and patch_size >= 1, lr > 0, and retrain_every, "
                              f"retrain_epochs and sources >= 0; got steps={self.steps}, restarts={self.restarts}, "
                              f"patch_size={self.patch_size}, lr={self.lr}, retrain_every={self.retrain_every}, "
                              f"retrain_epochs={self.retrain_epochs}, sources={self.sources}.")

    def single_target(self, scenario) -> bool:
        return False

    def check_threat(self, threat: ThreatModel) -> None:
        if threat.target_class is None:
            raise ConfigError("sleeper-agent is a class-level backdoor: pass --target-class T and --source-class S "
                              "(success: S's test images with the trigger classified as T; without S, every other "
                              "class's).")

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        self.trigger(shape)

    def trigger(self, shape: tuple[int, int, int]) -> Trigger:
        """The seeded patch, placed at random on every image it is applied to."""
        s = self.patch_size
        patch = torch.rand(shape[0], s, s, generator=generator(self.pattern_seed, self.name))
        return patch_trigger(shape, (patch > 0.5).float() if self.pattern == "binary" else patch, 0, "bottom-right",
                             self.name, "random", self.pattern_seed)

    def craft(self, train: Dataset, threat: ThreatModel, surrogate: Classifier | list[Classifier] | None = None,
              seed: int = 0, validation: Dataset | None = None) -> PoisonSet:
        self.check_threat(threat)
        originals = ensemble(surrogate, self.name)
        g = generator(seed, self.name)
        trigger, device = self.trigger(train.shape), device_of(originals[0])
        indices = self.select(originals, train, threat, g)
        triggered = self.triggered_sources(train, threat, trigger, g, generator(seed, self.name, "places"))
        bases, labels = train.x[indices].to(device), train.y[indices].to(device)
        best, best_alignment = bases, -2.0
        for restart in range(self.restarts):
            models = [for_second_order(m).eval() for m in originals]
            grads = source_gradients(models, triggered, threat.target_class)
            refresh = self.retraining(originals, train, indices, triggered, threat, seed, restart)
            poisons = match(models, bases, labels, grads, threat.eps, self.steps, self.lr, self.augment, g, self.init,
                            refresh)
            final = (refresh.latest if refresh is not None else None) or (models, grads)
            score = float(alignment(final[0], poisons, labels, final[1]))
            if score > best_alignment:
                best, best_alignment = poisons, score
        recipe = None if self.recipe is None else self.recipe.model_dump(mode="json")
        return PoisonSet(indices, best.detach().cpu(), train.y[indices].clone(), threat.num_classes, self.name,
                         threat.target_class, trigger, "all-to-one",
                         params=asdict(self) | {"recipe": recipe, "alignment": best_alignment},
                         source_class=threat.source_class)

    def select(self, models: list[Classifier], train: Dataset, threat: ThreatModel, g: torch.Generator
               ) -> torch.Tensor:
        """The training indices to perturb: given by the threat model (benchmark setups), else the target-class images
        with the largest gradient norms (or drawn at random)."""
        if threat.base_indices is not None:
            return threat.base_indices
        candidates = torch.nonzero(train.y == threat.target_class).squeeze(1)
        what = f"training images of target class {threat.target_class}"
        if self.selection == "random":
            return choose_bases(candidates, threat.budget, g, what)
        if threat.budget > len(candidates):
            choose_bases(candidates, threat.budget, g, what)  # raises the budget error
        norms = sum(gradient_norms(m, train.x[candidates], train.y[candidates]) for m in models)
        return candidates[norms.topk(threat.budget).indices.cpu()].sort().values

    def triggered_sources(self, train: Dataset, threat: ThreatModel, trigger: Trigger, g: torch.Generator,
                          places: torch.Generator) -> torch.Tensor:
        """The source class's training images (without one, every other class's; `sources` of them drawn, or all),
        each with the trigger at a place drawn once."""
        source = threat.source_class
        candidates = torch.nonzero(train.y == source if source is not None else train.y != threat.target_class
                                   ).squeeze(1)
        what = f"class {source}" if source is not None else f"classes other than {threat.target_class}"
        if not len(candidates):
            raise ConfigError(f"sleeper-agent matches the gradient of triggered training images of the source class; "
                              f"the training set holds none of {what}.")
        if self.sources:
            candidates = choose_bases(candidates, min(self.sources, len(candidates)), g, f"training images of {what}")
        return trigger.apply(train.x[candidates], places)

    def retraining(self, originals: list[Classifier], train: Dataset, indices: torch.Tensor, triggered: torch.Tensor,
                   threat: ThreatModel, seed: int, restart: int) -> Retraining | None:
        if not self.retrain_every or threat.setting != "scratch":
            return None
        recipe = self.recipe or TrainRecipe()
        if self.retrain_epochs:
            recipe = recipe.model_copy(update={"epochs": self.retrain_epochs, "milestones": ()})
        return Retraining(self, originals, train, indices, triggered, threat.target_class, recipe,
                          derive_seed(seed, self.name, "retrain", restart))


class Retraining:
    """The official schedule's retraining, called after every crafting step: at steps `retrain_every`, 2·... (not
    the last), fresh surrogates are trained on the training set with the current poisons and the source gradient is
    recomputed on them; `latest` holds the models and gradients in use."""

    def __init__(self, attack: SleeperAgent, originals: list[Classifier], train: Dataset, indices: torch.Tensor,
                 triggered: torch.Tensor, target_class: int, recipe: TrainRecipe, seed: int):
        self.attack, self.originals, self.train, self.indices = attack, originals, train, indices
        self.triggered, self.target_class, self.recipe, self.seed = triggered, target_class, recipe, seed
        self.latest: tuple[list[Classifier], list[torch.Tensor]] | None = None

    def __call__(self, step: int, poisons: torch.Tensor) -> tuple[list[Classifier], list[torch.Tensor]] | None:
        every, steps = self.attack.retrain_every, self.attack.steps
        if step == 0 or step % every or step == steps - 1:
            return None
        data = self.train.with_samples(self.indices, poisons.detach().cpu(), self.train.y[self.indices])
        models = []
        for k, original in enumerate(self.originals):
            run_seed = derive_seed(self.seed, step, k)
            fresh = train(reinitialised(original, run_seed), data, self.recipe, seed=run_seed)
            models.append(for_second_order(fresh).eval())
        self.latest = models, source_gradients(models, self.triggered, self.target_class)
        return self.latest


def reinitialised(model: Classifier, seed: int) -> Classifier:
    """A copy of `model` with every layer's parameters (and batch-norm statistics) drawn afresh with `seed`."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if module is not fresh and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh.train()


def source_gradients(models: list[Classifier], triggered: torch.Tensor, target_class: int,
                     chunk: int = 500) -> list[torch.Tensor]:
    """Per model, ∇θ of the mean cross-entropy of the triggered sources labelled as the target class (in chunks)."""
    grads = []
    for m in models:
        device = device_of(m)
        total = None
        for x in triggered.split(chunk):
            labels = torch.full((len(x),), target_class, dtype=torch.long, device=device)
            part = parameter_gradient(m, x.to(device), labels) * len(x)
            total = part if total is None else total + part
        grads.append((total / len(triggered)).detach())
    return grads


def gradient_norms(model: Classifier, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """‖∇θ L(x_i, y_i)‖ for every sample (per-sample gradients by vmap, in chunks), the model in eval mode."""
    training = model.training
    model.eval()
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    device = device_of(model)

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    norms = []
    for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
        grads = per_sample(params, xs.to(device), ys.to(device))
        norms.append(torch.sqrt(sum(v.pow(2).flatten(1).sum(1) for v in grads.values())))
    model.train(training)
    return torch.cat(norms).cpu()
