"""Models by name, training, evaluation and the trained-model cache."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError, unknown
from .architectures import (
    Classifier,
    convnet,
    convnet_wide,
    lasso,
    linear_svm,
    logistic,
    mlp,
    mobilenet_v2,
    resnet8,
    resnet18,
    ridge,
    vgg11,
)
from .cache import ModelCache, cached_model, config_hash
from .train import TrainRecipe, evaluate, predict, train

# The default training of each model trained from scratch (a scenario's recipe keys override it): measured to
# reach a useful model on every built-in dataset (tests/test_models.py states the floors; docs/inputs.md the figures).
LINEAR = TrainRecipe(epochs=50, batch_size=64, lr=0.03, schedule="cosine")
NETWORK = TrainRecipe(epochs=20, batch_size=64, lr=3e-3, schedule="cosine")


@dataclass(frozen=True)
class ModelInfo:
    build: Callable[..., Classifier]
    summary: str
    recipe: TrainRecipe = NETWORK


MODELS: dict[str, ModelInfo] = {
    "logistic": ModelInfo(logistic, "multinomial logistic regression on pixels (cross-entropy)", LINEAR),
    "linear-svm": ModelInfo(linear_svm, "linear classifier with the multi-class hinge loss", LINEAR),
    "ridge": ModelInfo(ridge, "least squares on ±1 class codes with an L2 penalty (ridge classifier)", LINEAR),
    "lasso": ModelInfo(lasso, "least squares on ±1 class codes with an L1 penalty (exact solver only)",
                       TrainRecipe(optimizer="exact")),
    "mlp": ModelInfo(mlp, "two hidden ReLU layers (256, 128)"),
    "convnet": ModelInfo(convnet, "small BN convnet: conv32-conv64 (max-pooled), fc128 features; on 32×32 colour "
                                  "images conv32-64-128-256, global average pool, 256-d features"),
    "convnet-wide": ModelInfo(convnet_wide, "BN convnet conv64-128-256, global average pool (a black-box surrogate)"),
    "resnet8": ModelInfo(resnet8, "small ResNet: stem 32, one basic block per stage 32-64-128, global average pool"),
    "resnet18": ModelInfo(resnet18, "ResNet-18, CIFAR variant (11M parameters; for GPUs)"),
    "mobilenet-v2": ModelInfo(mobilenet_v2, "MobileNetV2, CIFAR variant as JHT's (2.3M parameters; a black-box "
                                            "victim of the toxic-cifar10 suite; for GPUs)"),
    "vgg11": ModelInfo(vgg11, "VGG11 with batch norm, CIFAR variant as JHT's (9M parameters; a black-box victim of "
                              "the toxic-cifar10 suite; for GPUs)"),
}


def build_model(name: str, shape: Sequence[int], num_classes: int, seed: int = 0) -> Classifier:
    """A freshly initialised model for images of `shape` (C, H, W); the seed fixes its initial weights."""
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    if len(shape) != 3 or num_classes < 2:
        raise ConfigError(f"a model needs an image shape (C, H, W) and at least 2 classes; got {tuple(shape)}, "
                          f"{num_classes}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name].build(tuple(shape), num_classes)
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        # channels-last convolution weights: oneDNN's NHWC kernels train the convnets 1.25-1.43x faster and
        # take input gradients (crafting) 1.16-1.41x faster on 2 cores (benchmarks/memory_layout.py,
        # docs/benchmarks.md); inputs may stay NCHW, the convolutions follow the weights' layout
        model = model.to(memory_format=torch.channels_last)
    return model


def for_second_order(model: Classifier) -> Classifier:
    """A copy of `model` with NCHW weights, for gradients that are differentiated again (witches' brew's
    alignment, metapoison's unrolled steps): there oneDNN's channels-last kernels lose to NCHW, by 1.1x on a
    witches' brew step and 1.6-1.9x on a metapoison step of the CIFAR convnets on 2 cores
    (benchmarks/memory_layout.py), where they win on first-order steps (training, the feature-space attacks)."""
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)


__all__ = ["MODELS", "Classifier", "ModelCache", "TrainRecipe", "build_model", "cached_model", "config_hash",
           "evaluate", "for_second_order", "predict", "train"]
