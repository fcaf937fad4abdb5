"""One seed per trial derives every generator, so the same seed gives the same numbers on CPU."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from `seed` and any labels, stable across processes and Python versions."""
    text = "/".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU torch.Generator seeded from `seed` and `keys`."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *keys))
    return g
