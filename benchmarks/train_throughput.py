"""Training throughput (images/s) of each model on this machine; prints one line per model.

python benchmarks/train_throughput.py [--images 6000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab import TrainRecipe, build_model, load_dataset, train
from poisonlab.device import keep_freed_memory


def measure(name: str, data, epochs: int, batch_size: int) -> float:
    model = build_model(name, data.shape, data.num_classes)
    start = time.perf_counter()
    train(model, data, TrainRecipe(epochs=epochs, batch_size=batch_size))
    return epochs * len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    measure("logistic", load_dataset("digits").train, 1, args.batch_size)  # warm-up: first-call overheads
    for dataset, models in (("digits", ("logistic", "mlp", "convnet")),
                            ("fashion-mnist", ("logistic", "mlp", "convnet"))):
        data = load_dataset(dataset).train
        data = data.sample(min(args.images, len(data)), seed=0)
        for name in models:
            rate = measure(name, data, args.epochs, args.batch_size)
            print(f"{dataset:<14} {name:<10} {rate:8.0f} images/s")


if __name__ == "__main__":
    main()
