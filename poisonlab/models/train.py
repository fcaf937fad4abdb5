"""Training and evaluation: one loop for every model, seeded, with augmentation as batched tensor ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.nn import functional as F

from ..data import Dataset
from ..device import device_of
from ..errors import ConfigError
from ..seeding import generator
from .architectures import Classifier
from .exact import fit_exact


class TrainRecipe(BaseModel):
    """How a victim (or surrogate) is trained; unknown keys are an error. `C` is the inverse regularisation of
    the exact solvers (optimizer="exact"); the gradient optimizers use `weight_decay`. schedule="step" divides
    the learning rate by 10 at each epoch of `milestones` (none given: at 50% and 75% of training). `nesterov`:
    SGD's momentum is Nesterov's. `views` (head-only training with augmentation): 0 augments every batch anew;
    K > 0 computes the features of K augmented views of each image once and draws one per image per epoch.
    `pad`: what a random crop shows beyond the image's edge, its reflection or black (zeros: torchvision's
    `RandomCrop(padding=4)`, as JHT's victims and extractors are trained)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=1, le=2**40)
    optimizer: Literal["adam", "sgd", "exact"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    milestones: tuple[int, ...] = ()
    nesterov: bool = True
    augment: Literal["none", "crop", "flip-crop"] = "none"
    pad: Literal["reflect", "zeros"] = "reflect"
    views: int = Field(0, ge=0, le=1024)
    trainable: Literal["all", "head"] = "all"
    C: float = Field(1.0, gt=0)
    seed: int = 0

    @field_validator("milestones")
    @classmethod
    def increasing_epochs(cls, milestones: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in milestones) or list(milestones) != sorted(set(milestones)):
            raise ValueError(f"milestones must be increasing epoch numbers >= 1; got {list(milestones)}")
        return milestones

    def key(self) -> dict:
        """The recipe as stored in hashes: a field added after results were first stored counts only when set
        to something other than its default, so networks and trials stored before it keep their hashes."""
        return strip_added(self.model_dump(mode="json"))


ADDED_RECIPE_FIELDS = {"pad": "reflect"}


def strip_added(recipe: dict) -> dict:
    """A dumped recipe without the later-added fields left at their defaults (see TrainRecipe.key)."""
    return {k: v for k, v in recipe.items() if k not in ADDED_RECIPE_FIELDS or v != ADDED_RECIPE_FIELDS[k]}


def train(model: Classifier, dataset: Dataset, recipe: TrainRecipe, seed: int | None = None,
          batch_hook: Callable | None = None) -> Classifier:
    """Train `model` in place on `dataset` by `recipe` (seed overrides recipe.seed) and return it in eval mode.

    optimizer="exact" solves a linear model's convex problem to optimality instead (see models/exact.py).
    `batch_hook(model, x, y, g) -> (x, y)` may rewrite each augmented batch before the step (defenses that
    train on batches changed on the fly).
    """
    if recipe.optimizer == "exact":
        return fit_exact(model, dataset, recipe.C)
    if model.loss == "squared-l1":
        raise ConfigError("the lasso model is solved exactly: pass --optimizer exact (its L1 penalty is set by --C).")
    seed = recipe.seed if seed is None else seed
    device = device_of(model)
    if recipe.trainable == "head" and recipe.augment == "none" and batch_hook is None:
        with torch.no_grad():
            features = torch.cat([model.extractor.eval().forward(c.to(device)) for c in dataset.x.split(1024)]) \
                if len(dataset) else torch.empty(0, model.feature_dim, device=device)
        return train_head(model, features, dataset.y, recipe, seed)
    if recipe.trainable == "head" and recipe.views and batch_hook is None:
        views = view_features(model, dataset.x, recipe.views, recipe.augment, generator(seed, "views"), recipe.pad)
        return train_head(model, views, dataset.y, recipe, seed)
    params = model.head.parameters() if recipe.trainable == "head" else model.parameters()
    optimizer = make_optimizer(list(params), recipe)
    steps_per_epoch = -(-len(dataset) // recipe.batch_size)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    g = generator(seed, "train")
    model.train()
    if recipe.trainable == "head":
        model.extractor.eval()  # a frozen extractor keeps its batch-norm statistics
    for _ in range(recipe.epochs):
        order = torch.randperm(len(dataset), generator=g)
        for batch in order.split(recipe.batch_size):
            x = augment(dataset.x[batch].to(device, non_blocking=True), recipe.augment, g, recipe.pad)
            y = dataset.y[batch].to(device, non_blocking=True)
            if batch_hook is not None:
                x, y = batch_hook(model, x, y, g)
            loss = loss_fn(model, model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def train_head(model: Classifier, features: torch.Tensor, y: torch.Tensor, recipe: TrainRecipe,
               seed: int) -> Classifier:
    """Train only `model.head` on precomputed features (a frozen extractor): the same steps as `train` takes with
    trainable="head", without running the extractor on every batch. `features` is N×D, or K×N×D for K augmented
    views of each image (`view_features`): each epoch every image then contributes one of its views, drawn with
    the seed."""
    device = device_of(model)
    features, y = features.to(device), y.to(device)
    optimizer = make_optimizer(list(model.head.parameters()), recipe)
    scheduler = make_scheduler(optimizer, recipe, -(-len(y) // recipe.batch_size))
    g = generator(seed, "train")
    views = features.ndim == 3
    whole = recipe.batch_size >= len(y) and not views  # full-batch steps: no shuffled copy every step
    rows = torch.arange(len(y), device=device)
    for _ in range(recipe.epochs):
        chosen = features[torch.randint(len(features), (len(y),), generator=g).to(device), rows] if views \
            else features
        for batch in [slice(None)] if whole else torch.randperm(len(y), generator=g).split(recipe.batch_size):
            batch = batch if whole else batch.to(device)
            loss = loss_fn(model, model.head(chosen[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def view_features(model: Classifier, x: torch.Tensor, views: int, kind: str, g: torch.Generator,
                  pad: str = "reflect") -> torch.Tensor:
    """K×N×D: the (eval-mode) extractor's features of `views` augmented views of each image of `x`."""
    device = device_of(model)
    model.eval()
    out = torch.empty(views, len(x), model.feature_dim, device=device)
    for k in range(views):
        for start in range(0, len(x), 1024):
            chunk = augment(x[start:start + 1024].to(device), kind, g, pad)
            out[k, start:start + len(chunk)] = model.features(chunk).flatten(1)
    return out


def loss_fn(model: Classifier, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if model.loss == "hinge":
        return F.multi_margin_loss(logits, y)
    if model.loss == "squared":  # ±1 codes, as the exact solver fits them (weight_decay is the L2 penalty)
        codes = 2.0 * F.one_hot(y, logits.shape[1]).to(logits.dtype) - 1.0
        return 0.5 * ((logits - codes) ** 2).sum(1).mean()
    return F.cross_entropy(logits, y)


def make_optimizer(params, recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer, recipe: TrainRecipe, steps_per_epoch: int):
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    if recipe.schedule == "step":  # divide by 10 at the milestones' epochs (default: 50% and 75% of training)
        steps = [m * steps_per_epoch for m in recipe.milestones] or [total // 2, 3 * total // 4]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, steps, 0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def augment(x: torch.Tensor, kind: str, g: torch.Generator, pad: str = "reflect") -> torch.Tensor:
    """Random crops after padding by 1/8 of the width (`pad`: "reflect" or "zeros"), and horizontal flips, for
    a whole batch at once."""
    if kind == "none":
        return x
    if kind == "flip-crop":
        flip = (torch.rand(len(x), generator=g) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return random_crop(x, max(1, x.shape[-1] // 8), g, pad)


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if mode == "reflect" else F.pad(x, (pad,) * 4)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels (on the CPU) for images `x`, in eval mode, computed on the model's device."""
    model.eval()
    if len(x) == 0:
        return torch.empty(0, dtype=torch.long)
    device = device_of(model)
    return torch.cat([model(chunk.to(device)).argmax(1).cpu() for chunk in x.split(batch_size)])


def evaluate(model: Classifier, dataset: Dataset) -> float:
    """Accuracy of `model` on `dataset`."""
    return float((predict(model, dataset.x) == dataset.y).float().mean())
