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


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expansion, 3×3 depthwise convolution (the block's stride), linear 1×1 projection,
    each batch-normalised; at stride 1 the input is added back (through a 1×1 projection when the widths differ,
    as in the CIFAR variant JHT uses)."""

    def __init__(self, c_in: int, c_out: int, expansion: int, stride: int):
        super().__init__()
        wide = expansion * c_in
        self.body = nn.Sequential(
            nn.Conv2d(c_in, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.ReLU(),
            nn.Conv2d(wide, wide, 3, stride, 1, groups=wide, bias=False), nn.BatchNorm2d(wide), nn.ReLU(),
            nn.Conv2d(wide, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.stride = stride
        self.shortcut = nn.Sequential()
        if stride == 1 and c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + self.shortcut(x) if self.stride == 1 else out


# MobileNetV2's stages (expansion, width, blocks, stride), CIFAR variant: stride 1 in the stem and the second stage
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))


def mobilenet_v2(shape, num_classes: int) -> Classifier:
    """MobileNetV2 (Sandler et al. 2018), CIFAR variant as in JHT's models/mobilenetv2.py: 3×3 stem of 32 at
    stride 1, 17 inverted-residual blocks, 1×1 conv to 1280, global average pool; 1280-d features."""
    layers: list[nn.Module] = [nn.Conv2d(shape[0], 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    c_in = 32
    for expansion, c_out, blocks, stride in MOBILENET_V2:
        for i in range(blocks):
            layers.append(InvertedResidual(c_in, c_out, expansion, stride if i == 0 else 1))
            c_in = c_out
    layers += [nn.Conv2d(c_in, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
               nn.Flatten()]
    return Classifier(nn.Sequential(*layers), 1280, num_classes)


def vgg11(shape, num_classes: int) -> Classifier:
    """VGG11 with batch norm (Simonyan & Zisserman 2015, configuration A), CIFAR variant as in JHT's models/vgg.py:
    conv64-M-128-M-256-256-M-512-512-M-512-512-M (max-pooled while the map is at least 2 wide), then the map's
    average; 512-d features."""
    blocks, channels, size = [], shape[0], min(shape[1:])
    for width, pool in ((64, True), (128, True), (256, False), (256, True), (512, False), (512, True),
                        (512, False), (512, True)):
        pool = pool and size >= 2
        blocks.append(conv_block(channels, width, pool))
        channels, size = width, size // 2 if pool else size
    return Classifier(nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels, num_classes)
