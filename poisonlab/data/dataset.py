"""The Dataset type that flows through poisonlab, and seeded train/test subsetting."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..errors import ConfigError, DataError
from ..seeding import generator


@dataclass(frozen=True)
class Dataset:
    """Images `x` (float32, N×C×H×W, in [0, 1]) with labels `y` (int64, N in [0, len(classes))).

    `index` holds each sample's position in the source split it came from (e.g. the official CIFAR-10
    index), so that subsets and poisons can be traced back. Treat it as immutable: every operation returns a
    new Dataset and never edits the caller's tensors.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str = "dataset"
    index: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_images(self.x, f"{self.name}.x")
        if self.y.dtype != torch.int64 or self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(
                f"{self.name}.y must be an int64 tensor of {len(self.x)} labels (one per image); "
                f"got dtype {self.y.dtype}, shape {tuple(self.y.shape)}."
            )
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise DataError(
                f"{self.name}.y holds labels outside 0..{len(self.classes) - 1} "
                f"(min {int(self.y.min())}, max {int(self.y.max())}) for {len(self.classes)} classes."
            )
        if self.index is None:
            object.__setattr__(self, "index", torch.arange(len(self.y)))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, C×H×W."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def digest(self) -> str:
        """A short digest of which source samples this set holds (its sorted `index`): two sets with the same
        digest hold the same samples."""
        return hashlib.sha256(self.index.sort().values.to(torch.int64).numpy().tobytes()).hexdigest()[:16]

    def take(self, indices: torch.Tensor) -> Dataset:
        """The samples at `indices`, in that order."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return replace(self, x=self.x[indices], y=self.y[indices], index=self.index[indices])

    def with_samples(self, indices: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> Dataset:
        """A copy in which the samples at `indices` are replaced by images `x` with labels `y`."""
        new_x, new_y = self.x.clone(), self.y.clone()
        new_x[indices] = x
        new_y[indices] = y
        return replace(self, x=new_x, y=new_y)

    def with_added(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> Dataset:
        """A copy with the samples (x, y) appended; `index` says where each came from."""
        return replace(self, x=torch.cat([self.x, x]), y=torch.cat([self.y, y]), index=torch.cat([self.index, index]))

    def select_classes(self, classes: Sequence[int]) -> Dataset:
        """Keep only the given classes, relabelled 0..k-1 in the order given (e.g. (0, 4) for "0 vs 4")."""
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad or len(set(classes)) != len(classes) or len(classes) < 2:
            raise ConfigError(
                f"classes {classes} is not a list of at least two distinct class ids in 0..{self.num_classes - 1} "
                f"for {self.name} ({', '.join(self.classes)})."
            )
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        keep = torch.nonzero(remap[self.y] >= 0).squeeze(1)
        subset = self.take(keep)
        return replace(subset, y=remap[subset.y], classes=tuple(self.classes[c] for c in classes))

    def sample(self, size: int | None, seed: int, stream: str = "sample", sampling: str = "random") -> Dataset:
        """`size` samples (all of them when size is None): a seeded random draw (`sampling="random"`), the first
        `size` in order ("first": e.g. the 4,000 / 1,000-image CIFAR-10 subset of a full copy), or the first
        size / classes of each class ("first-per-class": JHT's 2,500-image CIFAR-10 training set, 250 a class),
        kept in their original order."""
        if size is None:
            size = len(self)
        if not 0 < size <= len(self):
            split = {"train": "training", "test": "test"}.get(stream, stream)
            raise ConfigError(f"cannot take {size} {split} samples from {self.name}, which has {len(self)} here; "
                              f"ask for 1..{len(self)} (--{stream}-size).")
        if sampling == "first":
            return self.take(torch.arange(size))
        if sampling == "first-per-class":
            return self.take(self.first_per_class(size, stream))
        order = torch.randperm(len(self), generator=generator(seed, stream))
        return self.take(order[:size])

    def first_per_class(self, size: int, stream: str) -> torch.Tensor:
        """The positions of the first size / classes samples of each class, in their original order."""
        per_class, k = divmod(size, self.num_classes)
        counts = torch.bincount(self.y, minlength=self.num_classes)
        if k or int(counts.min()) < per_class:
            raise ConfigError(f"sampling first-per-class takes the same number of {stream} samples from each of "
                              f"{self.name}'s {self.num_classes} classes, at most {int(counts.min())} (its smallest "
                              f"class); {size} is not a multiple of {self.num_classes} within that: ask for one.")
        order = torch.argsort(self.y, stable=True)  # by class, each class in its original order
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(self)) - starts[self.y[order]]
        return torch.sort(order[rank < per_class]).values

@dataclass(frozen=True)
class Splits:
    """A train and a test Dataset of the same task, and optionally the attacker's validation set."""

    train: Dataset
    test: Dataset
    val: Dataset | None = None

    def subset(self, classes: Sequence[int] | None = None, train_size: int | None = None,
               test_size: int | None = None, seed: int = 0, val_size: int | None = None,
               sampling: str = "random") -> Splits:
        """Seeded subsetting: optionally restrict to `classes`, then sample `train_size` / `test_size` (`sampling`:
        at random, the first ones in order, or the first ones of each class; Dataset.sample), and draw `val_size`
        validation samples from the training split, disjoint from the training subset."""
        if val_size and sampling == "first-per-class":
            raise ConfigError("sampling first-per-class draws a class-balanced training set; a validation set "
                              "beside it would unbalance it: leave val_size out or sample first or random.")
        train, test = self.train, self.test
        if classes is not None:
            train, test = train.select_classes(classes), test.select_classes(classes)
        val = None
        if val_size:
            n_train = len(train) - val_size if train_size is None else train_size
            if n_train < 1 or n_train + val_size > len(train):
                raise ConfigError(f"cannot draw {n_train} training and {val_size} validation samples from the "
                                  f"{len(train)} in {train.name}'s training split; ask for fewer.")
            pool = train.sample(n_train + val_size, seed, "train", sampling)  # its first n_train: the train sample
            train, val = pool.take(torch.arange(n_train)), pool.take(torch.arange(n_train, n_train + val_size))
        elif train_size is not None:
            train = train.sample(train_size, seed, "train", sampling)
        if test_size is not None:
            test = test.sample(test_size, seed, "test", sampling)
        return Splits(train, test, val)


def check_images(x: torch.Tensor, what: str) -> None:
    """Raise a DataError unless `x` is a finite float32 N×C×H×W tensor in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim != 4:
        got = f"{type(x).__name__} {getattr(x, 'dtype', '')} shape {tuple(getattr(x, 'shape', ()))}"
        raise DataError(f"{what} must be a float32 tensor of images N×C×H×W; got {got}.")
    if x.numel() and not torch.isfinite(x).all():
        raise DataError(f"{what} contains NaN or infinite values; images must be finite, in [0, 1].")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(f"{what} has values in [{float(x.min()):.3g}, {float(x.max()):.3g}]; "
                        "images must be scaled to [0, 1] (divide uint8 pixels by 255).")
