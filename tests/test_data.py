import gzip
import http.server
import pickle
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonlab.data import Dataset, load_dataset, loaders
from poisonlab.data.files import download, read_idx, safe_unpickle
from poisonlab.errors import ConfigError, DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train=20, n_test=10, gz=True) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28))),
                            ("labels-idx1-ubyte", np.arange(n) % 10)):
            data = idx_bytes(array)
            name = f"{part}-{kind}" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)


def test_digits_is_embedded_scaled_and_split(digits):
    assert digits.train.x.shape == (1437, 1, 8, 8) and digits.test.x.shape == (360, 1, 8, 8)
    assert digits.train.x.dtype == torch.float32 and 0 <= digits.train.x.min() and digits.train.x.max() <= 1
    assert set(digits.train.y.unique().tolist()) == set(range(10))
    assert not set(digits.train.index.tolist()) & set(digits.test.index.tolist())


def test_binary_subset_relabels_and_is_seeded(digits):
    a = digits.subset(classes=[0, 4], train_size=100, test_size=50, seed=3)
    b = digits.subset(classes=[0, 4], train_size=100, test_size=50, seed=3)
    c = digits.subset(classes=[0, 4], train_size=100, test_size=50, seed=4)
    assert a.train.classes == ("0", "4") and set(a.train.y.tolist()) == {0, 1}
    assert torch.equal(a.train.index, b.train.index) and not torch.equal(a.train.index, c.train.index)
    from sklearn.datasets import load_digits

    original = torch.from_numpy(load_digits().target)[a.train.index]  # index = position in the full data set
    assert torch.equal(torch.where(original == 4, 1, 0), a.train.y)


def test_subsetting_rejects_bad_requests(digits):
    with pytest.raises(ConfigError, match="cannot take 5000 training samples"):
        digits.subset(train_size=5000)
    with pytest.raises(ConfigError, match="distinct class ids"):
        digits.subset(classes=[0, 12])


def test_dataset_rejects_unscaled_or_nan_images():
    with pytest.raises(DataError, match=r"scaled to \[0, 1\]"):
        Dataset(torch.full((2, 1, 4, 4), 255.0), torch.zeros(2, dtype=torch.long), ("a", "b"))
    with pytest.raises(DataError, match="NaN"):
        Dataset(torch.full((2, 1, 4, 4), float("nan")), torch.zeros(2, dtype=torch.long), ("a", "b"))
    with pytest.raises(DataError, match="labels outside"):
        Dataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 5]), ("a", "b"))


def test_real_mnist_test_set_parses(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", 1)
    assert images.shape == (10000, 28, 28) and np.bincount(labels)[0] == 980


def test_fashion_mnist_loads_from_the_debian_package(fashion):
    assert fashion.train.x.shape == (60000, 1, 28, 28) and len(fashion.test) == 10000
    assert fashion.train.classes[0] == "T-shirt/top"


def test_idx_loader_reads_gz_and_raw_from_root(tmp_path):
    write_idx_set(tmp_path / "gz")
    write_idx_set(tmp_path / "raw", gz=False)
    for folder in ("gz", "raw"):
        splits = load_dataset("mnist", root=tmp_path / folder, download=False)
        assert splits.train.x.shape == (20, 1, 28, 28) and len(splits.test) == 10


def test_truncated_idx_file_is_one_clear_error(tmp_path):
    write_idx_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_truncated_gzip_and_wrong_format_are_clear_errors(tmp_path):
    write_idx_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        load_dataset("mnist", root=tmp_path, download=False)
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_missing_files_name_the_file_and_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz was not found.*--data-root"):
        load_dataset("mnist", root=tmp_path, download=False)


class FakeResponse:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_keeps_a_file_only_when_its_sha256_matches(tmp_path):
    import hashlib

    payload = b"poisonlab" * 1000
    good = hashlib.sha256(payload).hexdigest()
    opener = lambda url, timeout: FakeResponse(payload)  # noqa: E731
    assert download(["http://fake/a"], tmp_path / "a.bin", good, opener).read_bytes() == payload
    with pytest.raises(DataError, match="checksum"):
        download(["http://fake/b"], tmp_path / "b.bin", "0" * 64, opener)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # nothing partial is left behind
    assert (tmp_path / "a.bin").stat().st_mode & 0o044  # readable by others, like any downloaded file


def test_mnist_downloads_into_the_cache_from_a_local_server(tmp_path, monkeypatch):
    """The real download path (urllib) against a file server on loopback, checksums patched to the local files."""
    import hashlib

    served = tmp_path / "served"
    write_idx_set(served)
    sums = {p.name[:-3]: hashlib.sha256(p.read_bytes()).hexdigest() for p in served.iterdir()}
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = loaders.IDX_SOURCES["mnist"]
        monkeypatch.setitem(loaders.IDX_SOURCES, "mnist", loaders.IdxSource(
            "mnist", source.classes, ("http://127.0.0.1:1/", f"http://127.0.0.1:{server.server_port}/"), sums,
            source.how_to_get))
        splits = load_dataset("mnist", root=tmp_path / "empty", download=True)
    finally:
        server.shutdown()
    assert len(splits.train) == 20
    assert (loaders.cache_dir() / "mnist" / "train-images-idx3-ubyte.gz").is_file()


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned-by-pickle",))


def test_restricted_unpickler_refuses_a_pickle_that_calls_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="refused to unpickle.*system"):
        safe_unpickle(pickle.dumps({b"data": Evil()}), "evil")
    assert not (tmp_path / "pwned-by-pickle").exists()
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(safe_unpickle(pickle.dumps({"a": array, "b": [1, 2.0, b"x"]}, protocol=2), "ok")["a"], array)


def write_cifar_batches(folder: Path, n=10) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": list(range(n)),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_reads_batches_from_a_folder_and_from_the_archive(tmp_path):
    write_cifar_batches(tmp_path / "plain" / "cifar-10-batches-py")
    splits = load_dataset("cifar10", root=tmp_path / "plain", download=False)
    assert splits.train.x.shape == (50, 3, 32, 32) and len(splits.test) == 10
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "plain" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    again = load_dataset("cifar10", root=archive_dir, download=False)
    assert torch.equal(again.train.x, splits.train.x)


def test_cifar10_refuses_a_malicious_batch(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="refused to unpickle data_batch_3"):
        load_dataset("cifar10", root=tmp_path, download=False)


def write_cifar100(folder: Path, n=200, meta=True) -> None:
    """CIFAR-100's python layout: one train and one test pickle with fine (and coarse) labels, and meta."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        batch = {b"filenames": [b"x.png"] * n, b"fine_labels": [i % 100 for i in range(n)],
                 b"coarse_labels": [i % 20 for i in range(n)], b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    if meta:
        names = {b"fine_label_names": [f"class{c}".encode() for c in range(100)],
                 b"coarse_label_names": [f"super{c}".encode() for c in range(20)]}
        (folder / "meta").write_bytes(pickle.dumps(names, protocol=2))


def test_cifar100_reads_fine_labels_and_class_names_from_a_folder_and_the_archive(tmp_path):
    write_cifar100(tmp_path / "plain" / "cifar-100-python")
    splits = load_dataset("cifar100", root=tmp_path / "plain", download=False)
    assert splits.train.x.shape == (200, 3, 32, 32) and splits.train.num_classes == 100
    assert splits.train.classes[7] == "class7" and int(splits.train.y[107]) == 7 and splits.train.name == "cifar100"
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "plain" / "cifar-100-python", arcname="cifar-100-python")
    again = load_dataset("cifar100", root=archive_dir, download=False)
    assert torch.equal(again.train.x, splits.train.x) and again.test.classes == splits.test.classes
    write_cifar100(tmp_path / "nameless" / "cifar-100-python", meta=False)  # no meta: numbered classes
    assert load_dataset("cifar100", root=tmp_path / "nameless", download=False).train.classes[3] == "3"


def test_cifar100_refuses_a_malicious_meta_file_and_a_missing_one_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_cifar100(tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "meta").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="refused to unpickle meta"):
        load_dataset("cifar100", root=tmp_path, download=False)
    with pytest.raises(DataError, match="cifar-100-python.tar.gz was found.*cifar-100-python.tar.gz"):
        load_dataset("cifar100", root=tmp_path / "elsewhere", download=False)


def test_a_missing_cifar100_is_fetched_from_its_canonical_url_and_kept_only_with_the_published_sha256(tmp_path,
                                                                                                     monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    asked = []

    def opener(url, timeout):
        asked.append(url)
        return FakeResponse(b"not the archive")

    with pytest.raises(DataError, match="checksum .* is not the expected 85cd44d02ba64377"):
        load_dataset("cifar100", root=tmp_path / "nothing", download=True, opener=opener)
    assert asked == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert not any((tmp_path / "cache").rglob("*.tar.gz"))


def test_npz_loader_reads_both_layouts_and_refuses_pickles(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(50) % 5)
    splits = load_dataset("npz", root=tmp_path / "xy.npz")
    assert splits.train.x.shape == (40, 3, 12, 12) and splits.train.num_classes == 5
    np.savez(tmp_path / "split.npz", x_train=x[:30], y_train=np.arange(30) % 3, x_test=x[30:], y_test=np.arange(20) % 3,
             train_index=np.arange(100, 130))
    splits = load_dataset("npz", root=tmp_path / "split.npz")
    assert splits.train.index[0] == 100 and len(splits.test) == 20
    np.savez(tmp_path / "obj.npz", x=np.array([object()], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="holds object arrays"):
        load_dataset("npz", root=tmp_path / "obj.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not an .npz .zip. file"):
        load_dataset("npz", root=tmp_path / "bad.npz")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ConfigError, match="digits, mnist, mnist-t10k, fashion-mnist, cifar10, cifar100, npz"):
        load_dataset("imagenet")


def test_first_per_class_sampling_takes_the_first_images_of_each_class_in_order():
    y = torch.tensor([0, 1, 1, 2, 0, 2, 1, 0, 2, 2, 0, 1])
    data = Dataset(torch.arange(12.0).view(12, 1, 1, 1) / 12, y, ("a", "b", "c"), "toy", torch.arange(100, 112))
    taken = data.sample(6, seed=3, stream="train", sampling="first-per-class")
    assert taken.index.tolist() == [100, 101, 102, 103, 104, 105]  # 0,1,1,2,0,2: two of each, in order
    taken = data.sample(9, seed=0, stream="train", sampling="first-per-class")
    assert torch.bincount(taken.y).tolist() == [3, 3, 3] and taken.index.tolist() == [100, 101, 102, 103, 104, 105,
                                                                                       106, 107, 108]
    with pytest.raises(ConfigError, match="not a multiple of 3"):
        data.sample(7, seed=0, stream="train", sampling="first-per-class")
    uneven = Dataset(torch.zeros(12, 1, 1, 1), torch.tensor([0] * 5 + [1] * 4 + [2] * 3), ("a", "b", "c"), "toy")
    with pytest.raises(ConfigError, match="at most 3"):
        uneven.sample(12, seed=0, stream="train", sampling="first-per-class")
