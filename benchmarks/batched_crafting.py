"""Targeted trials crafted together (`--batch-trials`) against one at a time: seconds per trial and the largest
difference between the two ways' poisons, for the feature-space attacks in the toxic suite's frozen white-box cell
(25 poisons at 8/255 on the CIFAR-10 subset's pretrained convnet; `--model resnet18 --device cuda` on a GPU).

python benchmarks/batched_crafting.py --data-root ../shared/data/cifar10-subset/cifar10_subset.npz
    [--trials 10] [--device cpu|cuda] [--model convnet] [--attacks feature-collision,convex-polytope,bullseye-polytope]
    [--cache runs/batched-crafting]   (the pretrained network is trained once into the cache)
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.bench.trial import craft, prepare_trials
from poisonlab.device import keep_freed_memory, resolve_device


def timed(device: torch.device, run, *args):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def one_at_a_time(plan, networks, setups):
    return [craft(plan, networks, [s])[0] for s in setups]


def compare(scenario, device: torch.device, cache: str) -> tuple[float, float, float]:
    """Seconds per trial one at a time and together, and the largest difference between their poisons."""
    plan, networks, setups = prepare_trials(scenario, range(scenario.trials), cache)  # pretrains (or loads)
    craft(plan, networks, setups[:1])  # warms up
    alone, alone_s = timed(device, one_at_a_time, plan, networks, setups)
    together, together_s = timed(device, craft, plan, networks, setups)
    difference = max(float((a.x - b.x).abs().max()) for (a, _), (b, _) in zip(alone, together, strict=True))
    return alone_s / len(setups), together_s / len(setups), difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--attacks", default="feature-collision,convex-polytope,bullseye-polytope")
    parser.add_argument("--cache", default="runs/batched-crafting")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.trials} trials, "
          f"{args.model}, 25 poisons at 8/255\n")
    print("| attack | one at a time: s/trial | together: s/trial | speed-up | max poison difference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cache = f"{args.cache}/models"
    for name in args.attacks.split(","):
        scenario = scenario_from_dict({
            "dataset": "cifar10", "data_root": args.data_root, "train_size": 4000, "test_size": 1000,
            "sampling": "first", "model": args.model, "setting": "frozen", "knowledge": "white-box",
            "attack": name, "budget": 25, "eps": 8 / 255, "trials": args.trials, "device": args.device})
        per_alone, per_together, difference = compare(scenario, device, cache)
        print(f"| {name} | {per_alone:.2f} | {per_together:.2f} | {per_alone / per_together:.2f}× "
              f"| {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
