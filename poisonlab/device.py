"""Where the computation runs. Models may live on an accelerator; the tensors that enter and leave the core (data
sets, poisons, predictions) stay on the CPU, and each function moves what it needs to its model's device."""

from __future__ import annotations

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
