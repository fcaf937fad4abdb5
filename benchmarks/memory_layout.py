"""Convolution weights in NCHW against channels-last, and glibc's default allocator against the one the command
line sets (`poisonlab.device.keep_freed_memory`): milliseconds per step, per model, of
  train      an SGD step on 128 images (victims, surrogates),
  craft      the input gradient of 25 images through the frozen extractor (the feature-space attacks),
  alignment  witches' brew's step on 200 poisons: the input gradient of the gradient alignment (second order),
  unrolled   a metapoison metagradient: a 125-image batch with its poisons, through two unrolled SGD steps.
The layouts take turns within a process; `--allocator both` runs the whole measurement in child processes, one
per allocator setting, taking turns `--rounds` times (the setting is process-wide). Medians are printed.

python benchmarks/memory_layout.py [--device cpu] [--steps 3] [--rounds 5] [--allocator kept|system|both]
    [--models convnet convnet-28 convnet-wide resnet8] [--kinds train craft alignment unrolled]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch.nn import functional as F

from poisonlab import build_model
from poisonlab.attacks.metapoison import MetaPoison, Run
from poisonlab.attacks.witches_brew import gradient_alignment
from poisonlab.data import Dataset
from poisonlab.device import keep_freed_memory, resolve_device

# name shown: (model, input shape); convnet-28 is the convnet of the 28x28 grey data sets (Fashion-MNIST, MNIST)
CASES = {"convnet": ("convnet", (3, 32, 32)), "convnet-28": ("convnet", (1, 28, 28)),
         "convnet-wide": ("convnet-wide", (3, 32, 32)), "resnet8": ("resnet8", (3, 32, 32)),
         "resnet18": ("resnet18", (3, 32, 32))}
KINDS = ("train", "craft", "alignment", "unrolled")
LAYOUTS = {"nchw": torch.contiguous_format, "channels-last": torch.channels_last}


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


def steps_of(model_name: str, shape, layout: torch.memory_format, device: torch.device) -> dict:
    """The four steps of one network in one layout (same data for both layouts)."""
    g = torch.Generator().manual_seed(0)
    model = build_model(model_name, shape, 10).to(device=device, memory_format=layout)
    frozen = build_model(model_name, shape, 10).to(device=device, memory_format=layout).eval().requires_grad_(False)
    surrogate = build_model(model_name, shape, 10).to(device=device, memory_format=layout).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(128, *shape, generator=g).to(device), torch.randint(10, (128,), generator=g).to(device)
    poisons = torch.rand(25, *shape, generator=g).to(device).requires_grad_(True)
    aim = torch.rand(frozen.feature_dim, generator=g).to(device)
    many = torch.rand(200, *shape, generator=g).to(device).requires_grad_(True)
    labels, target = torch.randint(10, (200,), generator=g).to(device), torch.rand(1, *shape, generator=g).to(device)
    # metapoison's unrolled loss: 125-image batches of a 1,000-image set whose first 200 images are the poisons
    pool = Dataset(torch.rand(1000, *shape, generator=g), torch.randint(10, (1000,), generator=g),
                   tuple(map(str, range(10))))
    run = Run(MetaPoison(), pool, torch.arange(200), pool.x[:200].to(device), target,
              torch.tensor([3], device=device))
    order, delta = torch.arange(1000).view(8, 125), torch.zeros(200, *shape, device=device).requires_grad_(True)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def craft_step() -> None:
        torch.autograd.grad((frozen.features(poisons).mean(0) - aim).square().sum(), poisons)

    def alignment_step() -> None:
        torch.autograd.grad(gradient_alignment([surrogate], many, labels, target, 3, create_graph=True), many)

    def unrolled_step() -> None:
        torch.autograd.grad(run.unrolled_loss(surrogate, order, 0, delta, 0.1, g), delta)

    return {"train": train_step, "craft": craft_step, "alignment": alignment_step, "unrolled": unrolled_step}


def measure(model_name: str, shape, kinds, steps: int, rounds: int, device: torch.device) -> dict:
    """{layout: {kind: median seconds per step}}; the layouts take turns, `rounds` times, so a machine whose speed
    drifts (a shared host) slows both alike."""
    steps_by = {label: steps_of(model_name, shape, layout, device) for label, layout in LAYOUTS.items()}
    times = {label: {kind: [] for kind in kinds} for label in LAYOUTS}
    for _ in range(rounds):
        for label, by_kind in steps_by.items():
            for kind in kinds:
                by_kind[kind]()  # warm-up after the other layout ran
                times[label][kind].append(timed(by_kind[kind], steps, device))
    return {label: {kind: statistics.median(t) for kind, t in by_kind.items()} for label, by_kind in times.items()}


def in_children(args: argparse.Namespace) -> dict:
    """{allocator: {model: {layout: {kind: median}}}}: one child process per setting and round, taking turns."""
    runs: dict = {"system": [], "kept": []}
    for _ in range(args.rounds):
        for setting in runs:
            command = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps), "--rounds", "1",
                       "--allocator", setting, "--json", "--models", *args.models, "--kinds", *args.kinds]
            runs[setting].append(json.loads(subprocess.run(command, check=True, capture_output=True,
                                                           text=True).stdout))
    return {setting: {m: {lay: {k: statistics.median(r[m][lay][k] for r in results) for k in args.kinds}
                          for lay in LAYOUTS} for m in args.models} for setting, results in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="timings per layout (the median is printed)")
    parser.add_argument("--models", nargs="+", default=["convnet", "convnet-28", "convnet-wide", "resnet8"],
                        choices=list(CASES))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--allocator", default="kept", choices=("kept", "system", "both"))
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.allocator == "both":
        results = in_children(args)
    else:
        if args.allocator == "kept" and not keep_freed_memory():
            sys.exit("the kept-memory allocator setting needs glibc (poisonlab.device.keep_freed_memory)")
        results = {args.allocator: {m: measure(*CASES[m], args.kinds, args.steps, args.rounds, device)
                                    for m in args.models}}
        if args.json:
            print(json.dumps(results[args.allocator]))
            return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; milliseconds per step")
    print(f"{'model':<13} {'layout':<14} {'allocator':<10}" + "".join(f"{k:>11}" for k in args.kinds))
    for m in args.models:
        for lay in LAYOUTS:
            for setting, by_model in results.items():
                print(f"{m:<13} {lay:<14} {setting:<10}" + "".join(f"{by_model[m][lay][k] * 1e3:11.1f}"
                                                                  for k in args.kinds))


if __name__ == "__main__":
    main()
