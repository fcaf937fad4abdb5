"""Loaders by name: digits (embedded), mnist and fashion-mnist (IDX), cifar10 and cifar100 (python batches), npz."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import Dataset, Splits
from .files import download, read_idx, read_npz, safe_unpickle

DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX data set lives on the web, with the SHA-256 of each canonical gzip file."""

    name: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    how_to_get: str


IDX_SOURCES = {
    "mnist": IdxSource(
        "mnist", tuple(str(d) for d in range(10)),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
         "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
         "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
        "the four MNIST IDX files (train-images-idx3-ubyte.gz, ...)",
    ),
    "fashion-mnist": IdxSource(
        "fashion-mnist", FASHION_CLASSES,
        ("https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
         "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
         "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
         "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"},
        "the four Fashion-MNIST IDX files (on Debian: apt-get install dataset-fashion-mnist)",
    ),
}


@dataclass(frozen=True)
class CifarSource:
    """A CIFAR data set's python version: its archive, the folder inside it, its members and label key."""

    name: str
    folder: str
    url: str
    sha256: str
    train: tuple[str, ...]
    test: str
    label_key: bytes
    num_classes: int
    classes: tuple[str, ...] | None = None  # None: read from the archive's meta member
    names_key: bytes = b""
    meta: str = ""

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[1]


CIFAR_SOURCES = {
    "cifar10": CifarSource("cifar10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels", 10, CIFAR_CLASSES),
    "cifar100": CifarSource("cifar100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7", ("train",), "test",
                            b"fine_labels", 100, None, b"fine_label_names", "meta"),
}


def cache_dir() -> Path:
    """The user cache where downloads go: $XDG_CACHE_HOME/poisonlab (default ~/.cache/poisonlab)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "poisonlab"


def search_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    """The folders searched, in order: root, $POISONLAB_DATA, the Debian package's folder, the user cache."""
    bases = [Path(root)] if root else []
    if os.environ.get("POISONLAB_DATA"):
        bases.append(Path(os.environ["POISONLAB_DATA"]))
    dirs = [d for base in bases for d in (base, base / name)]
    if name in DEBIAN_DIRS:
        dirs.append(DEBIAN_DIRS[name])
    return dirs + [cache_dir() / name]


def find_file(dirs: list[Path], stem: str, suffixes: tuple[str, ...] = (".gz", "")) -> Path | None:
    """The first `stem` + suffix that exists in `dirs` (MNIST mirrors also name files 'x.idx3-ubyte')."""
    variants = [stem, stem.replace("-idx", ".idx")]
    for d in dirs:
        for v in variants:
            for s in suffixes:
                if (d / f"{v}{s}").is_file():
                    return d / f"{v}{s}"
    return None


def load_idx_dataset(name: str, root=None, download_missing: bool = True, opener=None) -> Splits:
    """MNIST or Fashion-MNIST from IDX files found locally, else downloaded with SHA-256 verification."""
    source = IDX_SOURCES[name]
    dirs = search_dirs(name, root)
    paths = {}
    for stem, sha in source.sha256.items():
        path = find_file(dirs, stem)
        if path is None and download_missing:
            path = download([m + stem + ".gz" for m in source.mirrors], cache_dir() / name / f"{stem}.gz", sha,
                            opener)
        if path is None:
            raise DataError(f"{name}: {stem}.gz was not found in {', '.join(map(str, dirs))} and downloading is "
                            f"off. Get {source.how_to_get} and pass --data-root to their folder.")
        paths[stem] = path
    return Splits(*(idx_split(name, source.classes, paths[f"{part}-images-idx3-ubyte"],
                              paths[f"{part}-labels-idx1-ubyte"]) for part in ("train", "t10k")))


def load_mnist_t10k(root=None, download_missing: bool = True, opener=None) -> Splits:
    """Only the 10,000 MNIST test images (enough for the small bilevel experiments), split by a seeded
    permutation: 3,400 form the training split (train and validation draws), 6,600 the test split."""
    source = IDX_SOURCES["mnist"]
    dirs = search_dirs("mnist", root)
    paths = {}
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        paths[stem] = find_file(dirs, stem)
        if paths[stem] is None and download_missing:
            paths[stem] = download([m + stem + ".gz" for m in source.mirrors], cache_dir() / "mnist" / f"{stem}.gz",
                                   source.sha256[stem], opener)
        if paths[stem] is None:
            raise DataError(f"mnist-t10k: {stem}.gz was not found in {', '.join(map(str, dirs))} and downloading is "
                            "off. Get the MNIST test files and pass --data-root to their folder.")
    full = idx_split("mnist-t10k", source.classes, paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(full)))
    return Splits(full.take(order[:3400]), full.take(order[3400:]))


def idx_split(name: str, classes, images_path: Path, labels_path: Path) -> Dataset:
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
                        "they must be the matching pair of files.")
    return Dataset(from_uint8(images[:, None]), to_labels(labels, len(classes), labels_path), classes, name)


def load_digits_dataset(root=None, **_) -> Splits:
    """scikit-learn's 8×8 digits (1,797 images, shipped with scikit-learn), split 80/20 stratified, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32))[:, None]
    y = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.2, stratify=digits.target, random_state=0)
    classes = tuple(str(d) for d in range(10))
    return Splits(*(Dataset(x[i], y[i], classes, "digits", torch.from_numpy(i)) for i in (train_idx, test_idx)))


def load_cifar(name: str, root=None, download_missing: bool = True, opener=None) -> Splits:
    """CIFAR-10 or CIFAR-100 (fine labels), python version: its folder (cifar-10-batches-py, cifar-100-python)
    or its tar.gz, read with a restricted unpickler; or an .npz file (root) with x_train, y_train, x_test, y_test
    and optionally the official train_index / test_index of its images (e.g. a subset)."""
    source = CIFAR_SOURCES[name]
    if root is not None and Path(root).suffix == ".npz":
        return cifar_npz(Path(root), source)
    dirs = search_dirs(name, root)
    folder = find_cifar_folder(dirs, source)
    if folder is not None:
        def read(member: str) -> bytes | None:
            return (folder / member).read_bytes() if (folder / member).is_file() else None
    else:
        archive = find_file(dirs, source.archive.removesuffix(".gz"), (".gz",))
        if archive is None and download_missing:
            archive = download([source.url], cache_dir() / name / source.archive, source.sha256, opener)
        if archive is None:
            raise DataError(f"{name}: neither {source.folder}/ nor {source.archive} was found in "
                            f"{', '.join(map(str, dirs))}. Get the python version from {source.url}.")
        read = _tar_reader(archive, source)
    train = [cifar_batch(read(member), member, source) for member in source.train]
    test = cifar_batch(read(source.test), source.test, source)
    classes = source.classes or cifar_names(read(source.meta), source)
    x_train, y_train = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    return Splits(Dataset(from_uint8(x_train), to_labels(y_train, source.num_classes, name), classes, name),
                  Dataset(from_uint8(test[0]), to_labels(test[1], source.num_classes, name), classes, name))


def cifar_npz(path: Path, source: CifarSource) -> Splits:
    splits = load_npz(path)
    for part in (splits.train, splits.test):
        if part.shape != (3, 32, 32) or part.num_classes != source.num_classes:
            raise DataError(f"{path} holds {part.num_classes}-class images of shape {part.shape}; {source.name} "
                            f"images are 3×32×32 in {source.num_classes} classes.")
    classes = source.classes or splits.train.classes
    return Splits(*(replace(part, classes=classes, name=source.name) for part in (splits.train, splits.test)))


def find_cifar_folder(dirs: list[Path], source: CifarSource) -> Path | None:
    for d in dirs:
        for sub in (d, d / source.folder):
            if (sub / source.test).is_file():
                return sub
    return None


def _tar_reader(archive: Path, source: CifarSource):
    """Read members straight out of the archive by name; nothing is extracted, so no path can escape."""
    def read(member: str) -> bytes | None:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                try:
                    handle = tar.extractfile(f"{source.folder}/{member}")
                except KeyError:
                    if member == source.meta:  # class names are optional
                        return None
                    raise
                return handle.read()
        except (KeyError, tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive} is not a complete {source.name} python archive ({exc}); delete it and "
                            f"fetch it again from {source.url}.") from None
    return read


def cifar_batch(data: bytes | None, member: str, source: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    if data is None:
        raise DataError(f"{source.name}: {member} is missing from {source.folder}; get the complete python version "
                        f"from {source.url}.")
    batch = safe_unpickle(data, member)
    key = source.label_key
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        raise DataError(f"{member} is not a {source.name} batch: expected a dict with b'data' and {key!r}.")
    x, y = np.asarray(batch[b"data"]), np.asarray(batch[key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{member}: expected uint8 data of shape N×3072 with N labels; got {x.dtype} {x.shape} "
                        f"and {len(y)} labels.")
    return x.reshape(-1, 3, 32, 32), y


def cifar_names(data: bytes | None, source: CifarSource) -> tuple[str, ...]:
    """The class names from the meta member (numbers when it is absent)."""
    if data is None:
        return tuple(str(c) for c in range(source.num_classes))
    meta = safe_unpickle(data, source.meta)
    names = meta.get(source.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != source.num_classes:
        raise DataError(f"{source.meta} is not {source.name}'s meta file: expected a dict whose "
                        f"{source.names_key!r} lists {source.num_classes} class names.")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load_npz(root=None, **_) -> Splits:
    """A user's own arrays: `x`, `y` (split 80/20, seed 0) or `x_train`, `y_train`, `x_test`, `y_test`, optionally
    `class_names` and `train_index` / `test_index`; checked whole (keys, lengths, shapes, dtypes, ranges)."""
    if root is None:
        raise DataError("npz: --data-root must be the path of an .npz file holding x and y (or x_train, y_train, "
                        "x_test, y_test).")
    root = Path(root)
    arrays = read_npz(root, "images and labels (x and y, or x_train, y_train, x_test, y_test)")
    name = root.stem
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = [(arrays[f"x_{s}"], arrays[f"y_{s}"], arrays.get(f"{s}_index"), s) for s in ("train", "test")]
    elif {"x", "y"} <= arrays.keys():
        check_lengths(root, arrays["x"], arrays["y"], "")
        if arrays["x"].ndim not in (3, 4):
            raise DataError(f"{root}: images x must be N×H×W, N×H×W×C or N×C×H×W; got shape {arrays['x'].shape}.")
        order = np.random.default_rng(0).permutation(len(arrays["y"]))
        cut = int(0.8 * len(order))
        parts = [(arrays["x"][i], arrays["y"][i], i, s) for i, s in ((order[:cut], "train"), (order[cut:], "test"))]
    else:
        raise DataError(f"{root} holds arrays {sorted(arrays)}; expected x and y, or x_train, y_train, x_test, "
                        "y_test.")
    for x, y, index, split in parts:
        check_lengths(root, x, y, f" ({split} split)")
        if index is not None and (np.asarray(index).shape != (len(y),) or
                                  not np.issubdtype(np.asarray(index).dtype, np.integer)):
            raise DataError(f"{root}: {split}_index must hold one integer index per {split} image ({len(y)}); got "
                            f"{np.asarray(index).dtype} of shape {np.asarray(index).shape}.")
    classes = tuple(str(c) for c in arrays["class_names"]) if "class_names" in arrays else None
    labels = [p[1] for p in parts]
    if any(np.asarray(y).ndim != 1 or not np.issubdtype(np.asarray(y).dtype, np.integer) for y in labels):
        bad = next(y for y in labels if np.asarray(y).ndim != 1 or not np.issubdtype(np.asarray(y).dtype, np.integer))
        raise DataError(f"{root}: labels must be a 1-D integer array; got {bad.dtype} shape {bad.shape}.")
    n_classes = len(classes) if classes else int(max(y.max() for y in labels if len(y))) + 1
    if n_classes < 2:
        raise DataError(f"{root}: every label is 0; a classifier needs at least two classes.")
    classes = classes or tuple(str(c) for c in range(n_classes))
    splits = [Dataset(to_images(x, root), to_labels(y, n_classes, root), classes, name,
                      None if i is None else torch.from_numpy(np.asarray(i, dtype=np.int64)))
              for x, y, i, _ in parts]
    if splits[0].x.shape[1:] != splits[1].x.shape[1:]:
        raise DataError(f"{root}: training images have shape {tuple(splits[0].x.shape[1:])} but test images "
                        f"{tuple(splits[1].x.shape[1:])}; both splits need images of one shape.")
    return Splits(*splits)


def check_lengths(root: Path, x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{root}{where} holds {len(x)} images but {len(y)} labels; each image needs exactly one "
                        "label.")


def to_images(x: np.ndarray, source) -> torch.Tensor:
    """N×H×W, N×H×W×C or N×C×H×W arrays (uint8 0..255 or float 0..1) as float32 N×C×H×W."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{source}: images must be N×H×W, N×H×W×C or N×C×H×W; got shape {x.shape}.")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return from_uint8(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{source}: images must be uint8 (0..255) or float (0..1); got {x.dtype}.")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def from_uint8(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32)).div_(255.0)


def to_labels(y: np.ndarray, n_classes: int, source) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: labels must be a 1-D integer array; got {y.dtype} shape {y.shape}.")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{source}: labels must lie in 0..{n_classes - 1}; found {y.min()}..{y.max()}.")
    return torch.from_numpy(y.astype(np.int64))
