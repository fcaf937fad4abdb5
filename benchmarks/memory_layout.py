"""Convolution weights in NCHW against channels-last (what `build_model` gives): milliseconds per training step
(SGD, a batch of 128) and per crafting step (the input gradient of 25 images through the frozen extractor, as
the feature-space attacks take it), per model; prints one line per model and layout.

python benchmarks/memory_layout.py [--device cpu] [--steps 20] [--models convnet convnet-28 convnet-wide resnet8]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from poisonlab import build_model
from poisonlab.device import resolve_device

# name shown: (model, input shape); convnet-28 is the convnet of the 28x28 grey data sets (Fashion-MNIST, MNIST)
CASES = {"convnet": ("convnet", (3, 32, 32)), "convnet-28": ("convnet", (1, 28, 28)),
         "convnet-wide": ("convnet-wide", (3, 32, 32)), "resnet8": ("resnet8", (3, 32, 32)),
         "resnet18": ("resnet18", (3, 32, 32))}


def timed(step, steps: int, device: torch.device) -> float:
    """Seconds per call of `step`, after three warm-up calls."""
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(name: str, shape, layout: torch.memory_format, steps: int, device: torch.device) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    model = build_model(name, shape, 10).to(device=device, memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(128, *shape, generator=g).to(device), torch.randint(10, (128,), generator=g).to(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    train_seconds = timed(train_step, steps, device)
    model.eval().requires_grad_(False)
    poisons = torch.rand(25, *shape, generator=g).to(device).requires_grad_(True)
    aim = torch.rand(model.feature_dim, generator=g).to(device)

    def craft_step() -> None:
        (grad,) = torch.autograd.grad((model.features(poisons).mean(0) - aim).square().sum(), poisons)

    return train_seconds, timed(craft_step, steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["convnet", "convnet-28", "convnet-wide", "resnet8"],
                        choices=list(CASES))
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    print(f"{'model':<13} {'layout':<14} {'train step (128)':>17} {'craft step (25)':>16}")
    for name in args.models:
        for label, layout in (("nchw", torch.contiguous_format), ("channels-last", torch.channels_last)):
            train_s, craft_s = measure(*CASES[name], layout, args.steps, device)
            print(f"{name:<13} {label:<14} {train_s * 1e3:13.1f} ms {craft_s * 1e3:13.1f} ms")


if __name__ == "__main__":
    main()
