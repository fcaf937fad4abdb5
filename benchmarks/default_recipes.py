"""Clean test accuracy of every model's default recipe (what `poisonlab run` trains when no recipe is given) on
each built-in dataset: the figures behind the floors of tests/test_models.py. Prints a Markdown table.

    python benchmarks/default_recipes.py [--shared ../shared/data] [--slow]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.data import load_dataset
from poisonlab.errors import DataError
from poisonlab.models import build_model, evaluate, train

CASES = [("digits", None, ("logistic", "linear-svm", "ridge", "lasso", "mlp", "convnet", "convnet-wide", "resnet8")),
         ("digits", 200, ("logistic",)),
         *((name, 2000, ("logistic", "linear-svm", "ridge", "lasso", "mlp", "convnet", "convnet-wide", "resnet8"))
           for name in ("mnist-t10k", "fashion-mnist")),
         ("cifar10", None, ("logistic", "linear-svm", "ridge", "mlp", "convnet"))]
SLOW = [("digits", None, ("resnet18",))]


def cpu() -> str:
    """The CPU's model name and whether it has AVX-512 (convnet steps are 2.5-3.5x slower without)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    return f"{model}, {'AVX-512' if ' avx512f' in info else 'no AVX-512'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default="../shared/data", help="the project's shared data folder")
    parser.add_argument("--slow", action="store_true", help="also resnet18 on digits (minutes on a CPU)")
    args = parser.parse_args()
    roots = {"mnist-t10k": Path(args.shared) / "mnist", "cifar10": Path(args.shared) / "cifar10-subset" /
             "cifar10_subset.npz"}
    print(f"machine: {cpu()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| dataset | training images | model | recipe | clean accuracy | seconds |")
    print("| --- | ---: | --- | --- | ---: | ---: |")
    for dataset, size, models in CASES + (SLOW if args.slow else []):
        try:
            data = load_dataset(dataset, root=roots.get(dataset), download=False).subset(None, size, None, seed=0)
        except DataError as exc:
            print(f"| {dataset} | – | – | skipped: {exc} | – | – |")
            continue
        for model in models:
            recipe = scenario_from_dict(dict(dataset=dataset, model=model)).recipe
            start = time.perf_counter()
            net = train(build_model(model, data.train.shape, data.train.num_classes, seed=0), data.train, recipe,
                        seed=0)
            seconds = time.perf_counter() - start
            shown = "exact" if recipe.optimizer == "exact" else \
                f"{recipe.optimizer} {recipe.lr:g}, {recipe.epochs} ep., batch {recipe.batch_size}, {recipe.schedule}"
            print(f"| {dataset} | {len(data.train)} | {model} | {shown} | {evaluate(net, data.test):.1%} | "
                  f"{seconds:.1f} |")


if __name__ == "__main__":
    main()
