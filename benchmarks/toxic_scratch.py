"""Witches' brew and MetaPoison against victims trained from scratch on the CIFAR-10 subset, each trial beside its
control (the same victim, same initialisation and batches, trained on the clean set).

The protocol is poisonlab's trial (poisonlab/bench/trial.py): the convnet pretrained once on the
4,000 training images is the attacker's surrogate (white-box: the victim's architecture and training data, not its
initialisation); each trial draws a correctly classified target, an adversarial class and the bases; the victim is a
fresh convnet (the trial's own seed) trained `--epochs` epochs by SGD (lr 0.1, momentum 0.9, weight decay 5e-4,
cosine, flips and crops), the surrogate's recipe too; `--optimizer adam` trains both by Adam 3e-3 instead.
Runs through the resumable runner: re-running into the same --out adds only missing trials.

python benchmarks/toxic_scratch.py --data-root PATH/cifar10_subset.npz [--trials 10] [--budget 200] [--eps 16]
    [--epochs 30] [--optimizer sgd|adam] [--attacks witches-brew,metapoison] [--out runs/toxic-scratch]
"""

from __future__ import annotations

import argparse
import time

from poisonlab.bench.runner import run_scenarios
from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.bench.summary import summarize
from poisonlab.device import keep_freed_memory

# the victim's optimiser; the surrogate is pretrained with the same recipe (white-box: the attacker knows it)
RECIPES = {"sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
           "adam": {"optimizer": "adam", "lr": 3e-3}}
# MetaPoison by the official algorithm at the toxic suite's CPU scale (poisonlab/bench/suites/toxic.yaml)
ATTACK_PARAMS = {"witches-brew": {}, "metapoison": {"steps": 20, "lr_drops": 8, "stages": 2, "stage_epochs": 4,
                                                    "meta_batches": 4}}


def scenarios(args: argparse.Namespace) -> list:
    recipe = {"epochs": args.epochs, "batch_size": 128, "schedule": "cosine", "augment": "flip-crop",
              **RECIPES[args.optimizer]}
    pretrain = {"pretrain": recipe} if args.optimizer != "adam" else {}  # adam: the default pretraining recipe
    made = []
    for attack in args.attacks.split(","):
        params = dict(ATTACK_PARAMS.get(attack, {}))
        if attack == "metapoison":  # its surrogates train as the victims do
            params.update(momentum=RECIPES[args.optimizer].get("momentum", 0.0),
                          inner_lr=RECIPES[args.optimizer]["lr"] if args.optimizer == "sgd" else 0.1)
        made.append(scenario_from_dict({
            "name": f"{attack} scratch {args.budget} poisons {args.eps:g}/255", "dataset": "cifar10",
            "data_root": args.data_root, "train_size": 4000, "test_size": 1000, "sampling": "first",
            "model": "convnet", "setting": "scratch", "knowledge": "white-box", "attack": attack,
            "attack_params": params, "budget": args.budget, "eps": args.eps / 255, "recipe": recipe, **pretrain,
            "trials": args.trials, "seed": args.seed}))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--eps", type=float, default=16, help="in 1/255")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--optimizer", choices=sorted(RECIPES), default="sgd")
    parser.add_argument("--attacks", default="witches-brew,metapoison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/toxic-scratch")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    chosen = scenarios(args)
    start = time.perf_counter()
    store = run_scenarios(chosen, args.out, progress=True)
    print(f"\n{args.trials} trials per attack, {args.budget} poisons, eps {args.eps:g}/255, {args.epochs}-epoch "
          f"{args.optimizer} victims; {time.perf_counter() - start:.0f} s in this run (stored trials are not re-run)\n")
    print("| attack | success [95% CI] | control | target adv. loss: poisoned / control | craft s/trial "
          "| train s/trial | clean accuracy |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for row in summarize(store, chosen):
        low, high = row["attack_success_ci"]
        print(f"| {row['attack']} | {row['attack_successes']}/{row['trials']} [{100 * low:.0f}%, {100 * high:.0f}%] | "
              f"{row['control_attack_successes']}/{row['trials']} | {row['target_adversarial_loss']:.2f} / "
              f"{row['control_adversarial_loss']:.2f} | {row['craft_seconds_per_trial']:.0f} | "
              f"{row['train_seconds_per_trial']:.0f} | {100 * row['clean_accuracy']:.1f}% |")


if __name__ == "__main__":
    main()
