"""A trained-model cache keyed by the hash of the config that produced the model."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.files import atomic_write_bytes
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


class ModelCache:
    """Stores state dicts under `root/<hash>.pt`, so a surrogate or clean model is trained once and reused."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, config: dict) -> Path:
        return self.root / f"{config_hash({**config, 'numerics': NUMERICS})}.pt"

    def get(self, config: dict, build: Callable[[], Classifier], fit: Callable[[Classifier], object]) -> Classifier:
        """The cached model for `config`, or `fit(build())` trained now and saved atomically."""
        model, path = build(), self.path(config)
        if path.is_file():
            try:
                model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
                return model.eval()
            except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
                raise DataError(f"cached model {path} does not load ({exc}); delete it to retrain.") from None
        fit(model)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_bytes(path.with_suffix(".json"), json.dumps({**config, "numerics": NUMERICS}, sort_keys=True,
                                                                   indent=1, default=str).encode())
        return model.eval()
