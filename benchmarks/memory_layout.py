"""Convolution weights in NCHW against channels-last (what `build_model` gives): milliseconds per training step
(SGD, a batch of 128) and per crafting step (the input gradient of 25 images through the frozen extractor, as
the feature-space attacks take it), per model; prints one line per model and layout.

python benchmarks/memory_layout.py [--device cpu] [--steps 5] [--rounds 7]
    [--models convnet convnet-28 convnet-wide resnet8]
"""

from __future__ import annotations

import argparse
import statistics
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
    """Seconds per call of `step` over `steps` calls."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def steps_of(model_name: str, shape, layout: torch.memory_format, device: torch.device):
    """The training step and the crafting step of one network in one layout (same data for both layouts)."""
    g = torch.Generator().manual_seed(0)
    model = build_model(model_name, shape, 10).to(device=device, memory_format=layout)
    frozen = build_model(model_name, shape, 10).to(device=device, memory_format=layout).eval().requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(128, *shape, generator=g).to(device), torch.randint(10, (128,), generator=g).to(device)
    poisons = torch.rand(25, *shape, generator=g).to(device).requires_grad_(True)
    aim = torch.rand(frozen.feature_dim, generator=g).to(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def craft_step() -> None:
        torch.autograd.grad((frozen.features(poisons).mean(0) - aim).square().sum(), poisons)

    return train_step, craft_step


def measure(model_name: str, shape, steps: int, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Median seconds per step of each layout's training and crafting steps; the layouts take turns, `rounds`
    times, so a machine whose speed drifts (a shared host) slows both alike."""
    layouts = {"nchw": torch.contiguous_format, "channels-last": torch.channels_last}
    steps_by = {label: steps_of(model_name, shape, layout, device) for label, layout in layouts.items()}
    times: dict[str, list[list[float]]] = {label: [[], []] for label in layouts}
    for _ in range(rounds):
        for label, pair in steps_by.items():
            for kind, step in enumerate(pair):
                step()  # warm-up after the other layout ran
                times[label][kind].append(timed(step, steps, device))
    return {label: [statistics.median(t) for t in kinds] for label, kinds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=7, help="timings per layout (the median is printed)")
    parser.add_argument("--models", nargs="+", default=["convnet", "convnet-28", "convnet-wide", "resnet8"],
                        choices=list(CASES))
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    print(f"{'model':<13} {'layout':<14} {'train step (128)':>17} {'craft step (25)':>16}")
    for name in args.models:
        for label, (train_s, craft_s) in measure(*CASES[name], args.steps, args.rounds, device).items():
            print(f"{name:<13} {label:<14} {train_s * 1e3:13.1f} ms {craft_s * 1e3:13.1f} ms")


if __name__ == "__main__":
    main()
