"""Safe reading of data files: IDX (gz or raw), restricted unpickling, checksummed downloads, atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip; a truncated or corrupt gzip is a DataError."""
    data = Path(path).read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path} is a corrupt or truncated gzip file ({exc}); delete it and fetch it again.") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format) with `ndim` dimensions; every size is checked."""
    data = read_bytes(path)
    expected = f"an IDX file (the MNIST format) with {ndim} dimension(s)"
    if len(data) < 4 + 4 * ndim or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{path} is not {expected}: its header is not an IDX header.")
    if data[3] != ndim:
        raise DataError(f"{path} has {data[3]} dimensions; expected {expected}.")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[data[2]])
    payload = data[4 + 4 * ndim:]
    need = int(np.prod(dims)) * dtype.itemsize
    if len(payload) != need:
        raise DataError(f"{path} is truncated or padded: its header says {dims} values ({need} bytes) "
                        f"but {len(payload)} bytes follow; delete it and fetch it again.")
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, bytes, strings, numbers and numpy arrays; any other global is refused.

    Calling anything else (os.system, eval, a class's constructor) is what makes a pickle dangerous, so a
    pickle that names any other global raises a DataError before it can run.
    """

    ALLOWED = {
        *((f"numpy.{core}.multiarray", f) for core in ("core", "_core") for f in ("_reconstruct", "scalar")),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refused to unpickle {self.source}: it asks for {module}.{name}, and only plain "
                        "containers, numbers, bytes and numpy arrays are allowed. The file is not a genuine data "
                        "file; do not use it.")


def safe_unpickle(data: bytes, source: str) -> object:
    """Load a pickle with RestrictedUnpickler (python-2 pickles decode strings as bytes)."""
    unpickler = RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
    unpickler.source = source
    try:
        return unpickler.load()
    except DataError:
        raise
    except Exception as exc:  # a corrupt pickle can raise nearly anything; report it as what it is
        raise DataError(f"{source} is not a readable pickle ({type(exc).__name__}: {exc}).") from None


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an npz file, refusing pickled objects; anything unreadable is one DataError naming why."""
    if not path.is_file():
        raise DataError(f"{path} does not exist (or is not a file); expected {what} (.npz).")
    head = path.open("rb").read(4)
    if head[:2] != b"PK":
        why = "is empty" if not head else "is not an .npz (zip) file"
        raise DataError(f"{path} {why}; expected {what} saved with numpy.savez.")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"{path} holds object arrays, which only a pickle can read; poisonlab never unpickles "
                            f"an npz: save {what} as plain numeric arrays.") from None
        raise DataError(f"{path} is damaged ({exc}); expected {what}: write it again.") from None
    except Exception as exc:  # noqa: BLE001 - a damaged zip can raise nearly anything (zlib, struct, encryption)
        raise DataError(f"{path} is truncated or damaged ({type(exc).__name__}: {exc}); expected {what}: copy or "
                        "write it again.") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_mode() -> int:
    """The permissions an ordinary new file gets under the current umask (mkstemp's 0600 is for secrets)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path: str | Path, what: str, folder: bool = True) -> Path:
    """`path` if poisonlab can write there: an existing folder (or, `folder=False`, a file or nothing) whose
    nearest existing ancestor is a folder that accepts new entries; else one ConfigError saying why. Nothing
    is left behind: the probe is a temporary folder, removed at once."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is not a folder (a file of that name exists); choose another path.")
    if not folder and path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name, e.g. {path / 'poisons.npz'}.")
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {ancestor} is not a folder; choose another path.")
    try:
        tempfile.TemporaryDirectory(dir=ancestor, prefix=".poisonlab-probe-").cleanup()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be created: {ancestor} does not accept new files "
                          f"({exc.strerror}); choose another path.") from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


Opener = Callable[..., object]


def download(urls: Sequence[str], dest: Path, sha256: str, opener: Opener | None = None) -> Path:
    """Fetch `dest` from the first of `urls` that answers, keeping it only if its SHA-256 matches."""
    opener = opener or urllib.request.urlopen
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, opener(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != sha256:
                failures.append(f"{url}: checksum {digest.hexdigest()[:16]}… is not the expected {sha256[:16]}…")
                continue
            os.chmod(tmp, default_mode())
            os.replace(tmp, dest)
            return dest
        except OSError as exc:
            failures.append(f"{url}: {exc}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name} ({'; '.join(failures)}). Put the file in {dest.parent} "
                    "yourself, or pass --data-root to a folder that holds it.")
