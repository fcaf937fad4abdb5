"""Data: the Dataset type, loaders by name, safe file parsing, seeded splits."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ..errors import unknown
from .dataset import Dataset, Splits, check_images
from .loaders import load_cifar, load_digits_dataset, load_idx_dataset, load_mnist_t10k, load_npz


@dataclass(frozen=True)
class DatasetInfo:
    load: Callable[..., Splits]
    summary: str
    reads_files: bool = True  # False: built in (no --data-root)
    num_classes: int | None = 10  # None: read from the files


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(load_digits_dataset, "scikit-learn's 8x8 handwritten digits, 1,797 images; always there",
                          reads_files=False),
    "mnist": DatasetInfo(partial(load_idx_dataset, "mnist"), "MNIST 28x28 digits, 60k/10k, IDX files"),
    "mnist-t10k": DatasetInfo(load_mnist_t10k, "the 10k MNIST test images alone, split 3,400/6,600 (seed 0)"),
    "fashion-mnist": DatasetInfo(partial(load_idx_dataset, "fashion-mnist"),
                                 "Fashion-MNIST 28x28 clothing, 60k/10k, IDX files (Debian: dataset-fashion-mnist)"),
    "cifar10": DatasetInfo(partial(load_cifar, "cifar10"),
                           "CIFAR-10 32x32 colour, 50k/10k, python batches (restricted unpickler)"),
    "cifar100": DatasetInfo(partial(load_cifar, "cifar100"),
                            "CIFAR-100 32x32 colour, 100 fine classes, 50k/10k, python version (restricted unpickler); "
                            "JHT's transfer extractors are pretrained on it", num_classes=100),
    "npz": DatasetInfo(load_npz, "your own arrays in an .npz file (x, y or x_train, y_train, x_test, y_test)",
                       num_classes=None),
}


def load_dataset(name: str, root=None, download: bool | None = None, opener=None) -> Splits:
    """Load a data set by name as train/test Splits; `root` is a folder (or, for npz, a file) to look in first.

    Missing files are downloaded (with SHA-256 checks) unless `download` is False, or None with
    $POISONLAB_OFFLINE set.
    """
    if download is None:
        download = not os.environ.get("POISONLAB_OFFLINE")
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    loader = DATASETS[name].load
    if name in ("mnist", "mnist-t10k", "fashion-mnist", "cifar10", "cifar100"):
        return loader(root=root, download_missing=download, opener=opener)
    return loader(root=root)


__all__ = ["DATASETS", "Dataset", "Splits", "check_images", "load_dataset"]
