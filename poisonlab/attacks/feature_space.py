"""Steps the clean-label feature-space attacks share: the surrogate ensemble, the target's features, the bases,
and Adam on poison perturbations projected into the eps box (batched over poisons, and over trials: a `Stack`
holds several trials' bases as one tensor, so one forward pass serves them all)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data import Dataset
from ..device import device_of
from ..errors import ConfigError
from ..models import Classifier
from ..threat import PoisonSet, ThreatModel
from .base import choose_bases


def ensemble(surrogate: Classifier | Sequence[Classifier] | None, attack: str) -> list[Classifier]:
    """The surrogate models as a list (one model, or an ensemble for grey- and black-box attacks)."""
    models = [surrogate] if isinstance(surrogate, nn.Module) else list(surrogate or [])
    if not models:
        raise ConfigError(f"{attack} crafts in a network's feature space: pass a surrogate model (or a list of them).")
    return models


@contextmanager
def frozen(models: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode and no parameter gradients while crafting (only the poisons are differentiated); restored after."""
    states = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in models]
    for m in models:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in states:
            m.train(training)
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)


@dataclass(frozen=True)
class Opening:
    """What every clean-label targeted attack starts from, on its surrogates' device: the ensemble, the target
    image(s), the bases' training indices (on the CPU), their images and labels."""

    models: list[Classifier]
    target: torch.Tensor
    indices: torch.Tensor
    bases: torch.Tensor
    labels: torch.Tensor

    def poison_set(self, attack, poisons: torch.Tensor, threat: ThreatModel, **extra) -> PoisonSet:
        """The attack's result, its tensors back on the CPU; `extra` joins the attack's fields in params."""
        return PoisonSet(self.indices, poisons.detach().cpu(), self.labels.cpu().clone(), threat.num_classes,
                         attack.name, threat.target_class, target_image_index=threat.target_image_index,
                         params=asdict(attack) | extra)


def open_targeted(attack, train: Dataset, threat: ThreatModel, surrogate, g: torch.Generator) -> Opening:
    """The ensemble, the target and the bases (drawn with `g` unless the threat model names them), moved to the
    device of the first surrogate."""
    models, target = ensemble(surrogate, attack.name), require_target_image(threat, attack.name)
    indices = clean_label_bases(train, threat, g)
    device = device_of(models[0])
    return Opening(models, target.to(device), indices, train.x[indices].to(device), train.y[indices].to(device))


@dataclass(frozen=True)
class Stack:
    """Several trials' openings crafted as one optimisation: their bases concatenated (trial-major, `per` each).
    The trials' losses are independent and summed, and Adam is element-wise, so each trial's poisons are the
    ones it would get alone (up to floating-point rounding); only the forward and backward passes are shared."""

    openings: list[Opening]
    bases: torch.Tensor
    per: int

    @property
    def models(self) -> list[Classifier]:
        return self.openings[0].models

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of the stacked poisons (or their features) as (trials, per, ...)."""
        return x.reshape(len(self.openings), self.per, *x.shape[1:])

    @torch.no_grad()
    def target_features(self, model: Classifier, layers: str = "last") -> list[torch.Tensor]:
        """Per layer, the trials' target features as (trials, dim): each trial's mean over its target images."""
        per_trial = [[f.mean(0) for f in layer_features(model, o.target, layers)] for o in self.openings]
        return [torch.stack(layer) for layer in zip(*per_trial, strict=True)]

    def poison_sets(self, attack, poisons: torch.Tensor, threats: Sequence[ThreatModel],
                    extras: Sequence[dict] | None = None) -> list[PoisonSet]:
        extras = extras or [{}] * len(self.openings)
        return [o.poison_set(attack, p, threat, **extra) for o, p, threat, extra
                in zip(self.openings, self.grouped(poisons), threats, extras, strict=True)]


def open_stack(attack, train: Dataset, threats: Sequence[ThreatModel], surrogate, seeds: Sequence[int],
               g: Callable[[int], torch.Generator]) -> Stack:
    """Each trial's opening (its bases drawn with `g(seed)`), stacked. The trials share the surrogates, the eps
    and the number of poisons (the trials of one scenario do)."""
    check_group(attack, threats, seeds)
    openings = [open_targeted(attack, train, t, surrogate, g(s)) for t, s in zip(threats, seeds, strict=True)]
    sizes = {len(o.bases) for o in openings}
    if len(sizes) > 1:
        raise ConfigError(f"{attack.name}: trials crafted together must have as many poisons each; "
                          f"got {sorted(sizes)}.")
    return Stack(openings, torch.cat([o.bases for o in openings]), sizes.pop())


def check_group(attack, threats: Sequence[ThreatModel], seeds: Sequence[int]) -> None:
    """Trials crafted together: one seed per threat model, one eps."""
    if not threats or len(threats) != len(seeds):
        raise ConfigError(f"{attack.name}: crafting trials together needs one seed per threat model; got "
                          f"{len(threats)} threat models and {len(seeds)} seeds.")
    if len({t.eps for t in threats}) > 1:
        raise ConfigError(f"{attack.name}: trials crafted together must share eps; "
                          f"got {sorted({t.eps for t in threats})}.")


def require_target_image(threat: ThreatModel, attack: str) -> torch.Tensor:
    if threat.target_image is None or threat.target_class is None:
        raise ConfigError(f"{attack} is a targeted attack: the threat model needs the target image(s) "
                          "(target_image) and the adversarial class (target_class).")
    return threat.target_image


def layer_features(model: Classifier, x: torch.Tensor, layers: str = "last") -> list[torch.Tensor]:
    """The features a feature-space attack matches: the penultimate layer ("last"), or ("all") also the output of
    every block before it (Zhu et al.'s multi-layer variant): each composite top-level module of the extractor
    (a conv block, a residual block) and each activation that ends a stem or a hidden layer, spatially
    averaged. A block whose average is the penultimate features (the last one before global average pooling)
    is counted once, as them."""
    if layers == "last":
        return [model.features(x)]
    if layers != "all":
        raise ConfigError(f"layers={layers!r} must be 'last' or 'all'.")
    modules = list(model.extractor) if isinstance(model.extractor, nn.Sequential) else [model.extractor]
    outputs, h = [], x
    for module in modules:
        h = module(h)
        if isinstance(module, nn.ReLU) or any(True for _ in module.children()):
            outputs.append(h.mean((2, 3)) if h.ndim == 4 else h)
    pools = any(isinstance(m, nn.AdaptiveAvgPool2d) for m in modules)
    if outputs and (pools or outputs[-1] is h):  # the last block is the features themselves
        outputs.pop()
    return outputs + [h]


def clean_label_bases(train: Dataset, threat: ThreatModel, g: torch.Generator) -> torch.Tensor:
    """The threat model's base indices when given (benchmark setups), else `budget` training images of the
    adversarial class drawn with the attack's seed."""
    if threat.base_indices is not None:
        return threat.base_indices
    candidates = torch.nonzero(train.y == threat.target_class).squeeze(1)
    return choose_bases(candidates, threat.budget, g, f"training images of adversarial class {threat.target_class}")


def adversarial_labels(target: torch.Tensor, adversarial_class: int) -> torch.Tensor:
    """The adversarial class as a label for each image in `target`, on its device."""
    return torch.full((len(target),), adversarial_class, dtype=torch.long, device=target.device)


def project(x: torch.Tensor, bases: torch.Tensor, eps: float) -> torch.Tensor:
    """The nearest point to `x` within L-inf distance eps of `bases` and inside [0, 1]."""
    return torch.minimum(torch.maximum(x, bases - eps), bases + eps).clamp_(0.0, 1.0)


def adam_in_box(start: torch.Tensor, bases: torch.Tensor, eps: float, loss: Callable[[torch.Tensor], torch.Tensor],
                steps: int, lr: float, after_step: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Minimise `loss(poisons)` with Adam from `start`, projecting into the eps box after every step.
    `after_step(poisons)` may update other variables (the convex-polytope coefficients) between steps."""
    poisons = project(start.clone(), bases, eps).requires_grad_(True)
    optimizer = torch.optim.Adam([poisons], lr=lr)
    for _ in range(steps):
        value = loss(poisons)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        with torch.no_grad():
            poisons.copy_(project(poisons, bases, eps))
            if after_step is not None:
                after_step(poisons)
    return poisons.detach()


def relative_polytope_loss(models: Sequence[Classifier], poisons: torch.Tensor, target: torch.Tensor) -> float:
    """Bullseye's loss, averaged over models: ||mean_j f(p_j) - f(t)||² / ||f(t)||² (0 = the poisons' feature
    mean sits on the target); a yardstick the trial reports for every feature-space attack."""
    with torch.no_grad(), frozen(models):
        values = []
        device = device_of(models[0])
        poisons, target = poisons.to(device), target.to(device)
        for m in models:
            target_feature = m.features(target).mean(0)
            miss = (m.features(poisons).mean(0) - target_feature).pow(2).sum()
            values.append(float(miss / target_feature.pow(2).sum()))
    return sum(values) / len(values)
