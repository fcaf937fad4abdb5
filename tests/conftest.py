"""Shared fixtures: an isolated data cache, the optional real data sets, and small data to train on fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.data import load_dataset
from poisonlab.device import keep_freed_memory
from poisonlab.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    keep_freed_memory()  # the allocator setting the command line runs with: same numbers, faster steps


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's cache, sees the user's $POISONLAB_DATA, or downloads anything."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("POISONLAB_OFFLINE", "1")
    monkeypatch.delenv("POISONLAB_DATA", raising=False)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fashion():
    try:
        return load_dataset("fashion-mnist", download=False)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): {exc}")


@pytest.fixture(scope="session")
def mnist_dir():
    path = SHARED_DATA / "mnist"
    if not (path / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the real MNIST test files are not in {path} (the project's shared data folder)")
    return path


@pytest.fixture(scope="session")
def cifar_subset_path():
    path = SHARED_DATA / "cifar10-subset" / "cifar10_subset.npz"
    if not path.is_file():
        pytest.skip(f"the CIFAR-10 subset is not in {path} (the project's shared data folder)")
    return path


@pytest.fixture(scope="session")
def setups_dir():
    path = SHARED_DATA / "poisoning-benchmark-setups"
    if not (path / "cifar10_transfer_learning.json").is_file():
        pytest.skip(f"the Just How Toxic setups are not in {path} (the project's shared data folder)")
    return path
