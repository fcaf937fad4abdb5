"""Detectors against a backdoor: detection recall / AUROC at 1.5× the budget, and attack success after
retraining on the kept data. Prints one line per detector.

    python benchmarks/detectors.py --dataset fashion-mnist --train-size 6000 --budget 0.05 --seeds 0 1
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab import ThreatModel, build_model, load_dataset, make_attack, train
from poisonlab.defenses import DEFENSES, Detector, detection_counts, make_defense, removal_mask
from poisonlab.device import keep_freed_memory
from poisonlab.metrics import attack_success_rate, clean_accuracy
from poisonlab.models import TrainRecipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--defenses", nargs="+", default=[n for n, c in DEFENSES.items() if issubclass(c, Detector)])
    parser.add_argument("--retrain", nargs="*", default=["spectral-signatures", "activation-clustering"])
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    torch.set_num_threads(2)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=64, lr=0.002, schedule="cosine")
    params = {"patch_size": 4, "margin": 1, "pattern": "checkerboard"} if args.attack == "badnets" else {}
    splits = load_dataset(args.dataset)
    for seed in args.seeds:
        data = splits.subset(None, args.train_size, args.test_size, seed=seed)
        threat = ThreatModel.for_data(data.train, args.budget, target_class=7)
        poison = make_attack(args.attack, **params).craft(data.train, threat, seed=seed)
        poisoned = poison.apply(data.train)
        is_poison = poison.is_poison(poisoned)
        start = time.perf_counter()
        model = train(build_model("convnet", data.train.shape, 10, seed=seed), poisoned, recipe, seed=seed)
        asr = attack_success_rate(model, data.test, poison).value
        print(f"seed {seed}: poisoned victim clean {clean_accuracy(model, data.test).value:.3f} ASR {asr:.3f} "
              f"({time.perf_counter() - start:.0f} s)")
        for name in args.defenses:
            defense = make_defense(name)
            start = time.perf_counter()
            scores = defense.score(poisoned, model if defense.needs_model else None, seed=seed)
            seconds = time.perf_counter() - start
            keep = removal_mask(scores, defense.n_remove(len(poisoned), threat.budget))
            m = detection_counts(scores, is_poison, keep)
            line = (f"  {name:<22} recall {m.removed_poisons / m.n_poisons_present:.3f} "
                    f"AUROC {m.detection_auroc:.3f} removed {m.n_removed} ({seconds:.1f} s)")
            if name in args.retrain:
                kept = poisoned.take(torch.nonzero(keep).squeeze(1))
                defended = train(build_model("convnet", data.train.shape, 10, seed=seed), kept, recipe, seed=seed)
                line += (f"  retrained: clean {clean_accuracy(defended, data.test).value:.3f} "
                         f"ASR {attack_success_rate(defended, data.test, poison).value:.3f}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
