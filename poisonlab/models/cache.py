"""Trained networks, cached on disk by the hash of the config that produced them (and the device they train on):
`cached_model` is the one place that loads a network or trains and stores it."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.files import atomic_write_bytes
from ..device import device_of
from ..errors import DataError
from .architectures import Classifier

# Part of every cached model's key: change it when a change to how networks compute (such as the convolution
# weights' memory layout, which rounds differently) would train different weights from the same config, so a
# user's older cache is not mixed with today's numbers.
NUMERICS = "channels-last"


def config_hash(config: dict) -> str:
    """A short, stable hash of a JSON-serialisable config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_model(config: dict, build: Callable[[], Classifier], fit: Callable[[Classifier], object],
                 cache_dir: str | Path | None) -> Classifier:
    """`fit(build())`, or the network stored for `config` in `cache_dir` (None: no cache, always trained)."""
    if cache_dir is None:
        model = build()
        fit(model)
        return model.eval()
    return ModelCache(cache_dir).get(config, build, fit)


class ModelCache:
    """Stores state dicts under `root/<hash>.pt`, so a network is trained once and reused. The key is the config,
    the numerics and the device the network is built on (a GPU's weights differ from the CPU's)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(config: dict, device: str = "cpu") -> dict:
        return {**config, "numerics": NUMERICS, "device": device}

    def path(self, config: dict, device: str = "cpu") -> Path:
        return self.root / f"{config_hash(self.key(config, device))}.pt"

    def get(self, config: dict, build: Callable[[], Classifier], fit: Callable[[Classifier], object]) -> Classifier:
        """The cached model for `config`, or `fit(build())` trained now and saved atomically."""
        model = build()
        device = device_of(model).type
        key, path = self.key(config, device), self.path(config, device)
        if path.is_file():
            try:
                model.load_state_dict(torch.load(path, weights_only=True, map_location=device_of(model)))
                return model.eval()
            except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
                raise DataError(f"cached model {path} does not load ({exc}); delete it to retrain.") from None
        fit(model)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(key, sort_keys=True, indent=1, default=str).encode())
        return model.eval()
