"""Where the computation runs. Models may live on an accelerator; the tensors that enter and leave the core (data
sets, poisons, predictions) stay on the CPU, and each function moves what it needs to its model's device."""

from __future__ import annotations

import ctypes
import os

import torch
from torch import nn

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` (the first GPU when there is one, else the CPU), checked against
    what this torch build and machine offer."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name; use cpu, cuda, cuda:N or auto.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: poisonlab runs on cpu or cuda; use cpu, cuda, cuda:N or auto.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this torch build ({torch.__version__}) sees no CUDA "
                              "GPU; install a CUDA build of torch on a machine with a GPU, or use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                              f"numbered from 0.")
    return device


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
KEEP_UP_TO = 2**31 - 1  # bytes of freed memory glibc may keep at the top of the heap before it trims


def keep_freed_memory() -> bool:
    """Let glibc keep and reuse freed memory instead of handing it back to the kernel (the CPU runs' allocator
    setting; process-wide, so the command line and its workers call it, not the library's import).

    PyTorch takes CPU tensors from malloc. By default glibc serves each block above its mmap threshold
    (128 KiB, rising to 32 MiB at most) with fresh pages and unmaps it on free, so every training or crafting
    step faults its activations' pages in again and the kernel zeroes them. Served from a heap that is kept,
    the same steps reuse warm memory: training steps of the CIFAR convnets 1.2-1.6x faster, witches' brew's
    1.1-1.8x, metapoison's 1.5-3.4x on 2 cores (benchmarks/memory_layout.py --allocator both,
    docs/benchmarks.md). The numbers are unchanged (PyTorch aligns every tensor to 64 bytes either way); the
    process keeps its peak memory until it ends. Returns whether the setting took effect:
    False off glibc (macOS, musl) or with POISONLAB_MALLOC=system in the environment."""
    if os.environ.get("POISONLAB_MALLOC", "").lower() == "system":
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc's mallopt takes these parameters; others differ
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))
