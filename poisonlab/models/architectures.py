"""Architectures by name. Each model has `features(x)` (the extractor) and `head` (the last linear layer)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Classifier(nn.Module):
    """`head(features(x))`; `loss` names the training loss ("cross-entropy", "hinge", "squared", "squared-l1")."""

    loss = "cross-entropy"

    def __init__(self, extractor: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.extractor = extractor
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LinearSVM(Classifier):
    """A linear classifier trained with the (multi-class, Crammer-Singer-style) hinge loss."""

    loss = "hinge"


class RidgeClassifier(Classifier):
    """A linear model fitted by least squares to ±1 class codes (one-vs-rest), L2-regularised."""

    loss = "squared"


class LassoClassifier(Classifier):
    """A linear model fitted by least squares to ±1 class codes, L1-regularised (solved exactly only)."""

    loss = "squared-l1"


def logistic(shape, num_classes: int) -> Classifier:
    """Multinomial logistic regression on raw pixels."""
    return Classifier(nn.Flatten(), math.prod(shape), num_classes)


def linear_svm(shape, num_classes: int) -> Classifier:
    return LinearSVM(nn.Flatten(), math.prod(shape), num_classes)


def ridge(shape, num_classes: int) -> Classifier:
    return RidgeClassifier(nn.Flatten(), math.prod(shape), num_classes)


def lasso(shape, num_classes: int) -> Classifier:
    return LassoClassifier(nn.Flatten(), math.prod(shape), num_classes)


def mlp(shape, num_classes: int, hidden: tuple[int, ...] = (256, 128)) -> Classifier:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return Classifier(nn.Sequential(*layers), width, num_classes)


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


def convnet(shape, num_classes: int, widths: tuple[int, ...] | None = None, hidden: int = 128) -> Classifier:
    """A small BN convnet. On small images (digits, MNIST, Fashion-MNIST): 3×3 conv blocks conv32-conv64 (max-pooled
    while the map is at least 8 wide), then a ReLU fc layer whose `hidden` outputs are the features. On colour
    images at least 32 wide (CIFAR-10): conv32-64-128-256, global average pooling, 256-d features, the network
    the clean-label benchmark here is calibrated on (67% on the 4,000-image CIFAR-10 subset)."""
    channels, height, width = shape
    if widths is None and channels == 3 and min(height, width) >= 32:
        return convnet_gap(shape, num_classes)
    blocks = []
    for out in widths or (32, 64):
        pool = min(height, width) >= 8
        blocks.append(conv_block(channels, out, pool))
        channels = out
        height, width = (height // 2, width // 2) if pool else (height, width)
    extractor = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(channels * height * width, hidden), nn.ReLU())
    return Classifier(extractor, hidden, num_classes)


def convnet_gap(shape, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256)) -> Classifier:
    """BN conv blocks (max-pooled while the map is at least 8 wide), then global average pooling: the features
    are the last block's channels."""
    blocks, channels, size = [], shape[0], min(shape[1:])
    for out in widths:
        pool = size >= 8
        blocks.append(conv_block(channels, out, pool))
        channels, size = out, size // 2 if pool else size
    extractor = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(extractor, channels, num_classes)


def convnet_wide(shape, num_classes: int) -> Classifier:
    """A wider, shallower relative of the convnet (conv64-128-256, global average pool): a black-box surrogate."""
    return convnet_gap(shape, num_classes, (64, 128, 256))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(shape, num_classes: int) -> Classifier:
    """ResNet-18, CIFAR variant (He et al. 2016): 3×3 stem, no max-pool, stages of 64-128-256-512."""
    layers: list[nn.Module] = [nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    extractor = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(extractor, 512, num_classes)


def resnet8(shape, num_classes: int) -> Classifier:
    """A small ResNet (3×3 stem of 32, one basic block per stage of 32-64-128, global average pool): a cheap
    residual network, e.g. a black-box surrogate of another family than the convnet."""
    layers: list[nn.Module] = [nn.Conv2d(shape[0], 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    c_in = 32
    for c_out, stride in ((32, 1), (64, 2), (128, 2)):
        layers.append(BasicBlock(c_in, c_out, stride))
        c_in = c_out
    extractor = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(extractor, c_in, num_classes)
