"""feature-collision, bullseye-polytope and witches-brew side by side with IBM's Adversarial Robustness Toolbox
(`FeatureCollisionAttack`, `BullseyePolytopeAttackPyTorch`, `GradientMatchingAttack`), on the same network, data,
targets, bases, budget and eps: the CIFAR-10 subset, the convnet pretrained on its 4,000 training images
(poisonlab's cached pretraining). Feature collision and bullseye: frozen, the victim retraining its linear head
(poisonlab's frozen victim, 200 full-batch Adam steps). Gradient matching: from scratch, the victim a fresh convnet
trained 30 epochs on the poisoned set by the toxic suite's SGD recipe, the surrogate pretrained by the same
(`--gm-trials`, `--gm-budget`, `--gm-eps`; 0 trials skips it). Prints each tool's success over the trials and
its crafting time per trial, then whether each tool's poisons change when only the target changes. Needs the
benchmark extra: pip install -e ".[bench]".

ART's feature collision has no L-inf bound; its poisons are projected into the eps box afterwards (both tools
are then held to the same threat model). ART's bullseye runs twice: at its defaults (4,000 iterations, learning
rate 0.04) and at poisonlab's number of steps (50), both with its `epsilon` = eps; `endtoend=False` is not used
because it fails in ART 1.20.1. ART's gradient matching gets the bases as its whole `x_train` with
`percent_poison=1` (so it poisons exactly them), one restart (`max_trials=1`, as poisonlab's default) and its
default 250 epochs and schedule. Each tool crafts on the layout it is fastest with: channels-last weights for the
first-order feature-space attacks, an NCHW copy for gradient matching (poisonlab's `for_second_order`).

python benchmarks/art_targeted_side_by_side.py --data-root PATH/cifar10_subset.npz [--trials 8] [--eps 8]
    [--gm-trials 3] [--kinds feature-collision,bullseye-polytope,witches-brew]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import numpy as np
import torch
from torch import nn

from poisonlab import make_attack
from poisonlab.attacks.feature_space import project
from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.bench.trial import prepare_trials
from poisonlab.device import keep_freed_memory
from poisonlab.models import for_second_order, predict
from poisonlab.seeding import generator
from poisonlab.threat import PoisonSet


def art_classifier(model):
    """ART's wrapper of `model`. ART 1.20.1's `PyTorchClassifier.get_activations` registers a new forward hook
    on the layer every time it is called with a layer number (it checks the number against the names it stores
    under), and never removes them; each costs ~1 µs per forward pass of that layer, and its attacks call it
    thousands of times. Pass ART its own copy of the network, or poisonlab, crafting later on the same network,
    pays for ART's hooks (what made poisonlab's crafting 2.5-10x slower in this script before)."""
    from art.estimators.classification import PyTorchClassifier

    # ART exposes the layers of an nn.Sequential: layer 0 is the extractor (the features), layer 1 the head
    sequential = nn.Sequential(model.extractor, model.head).eval()
    return PyTorchClassifier(sequential, nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                             clip_values=(0.0, 1.0))


def art_poisons(kind: str, classifier, target: torch.Tensor, bases: torch.Tensor, label: int, eps: float,
                steps: int | None) -> torch.Tensor:
    """ART's poisons for `kind`, projected into the eps box; `steps`: bullseye's iterations (None: ART's own)."""
    from art.attacks.poisoning import BullseyePolytopeAttackPyTorch, FeatureCollisionAttack

    x, t = bases.numpy(), target.numpy()
    if kind == "witches-brew":
        from art.attacks.poisoning import GradientMatchingAttack

        attack = GradientMatchingAttack(classifier, 1.0, epsilon=eps, max_trials=1, verbose=0)
        poisons, _ = attack.poison(t, np.eye(10)[[label]], x, np.eye(10)[[label] * len(x)])
        return project(torch.from_numpy(np.asarray(poisons, dtype=np.float32)), bases, eps)
    if kind == "feature-collision":
        attack = FeatureCollisionAttack(classifier, t, 0, verbose=False)
    else:
        iterations = {} if steps is None else {"max_iter": steps}
        attack = BullseyePolytopeAttackPyTorch(classifier, t, 0, epsilon=eps, verbose=False, **iterations)
    poisons, _ = attack.poison(x, np.eye(10)[[label] * len(x)])
    return project(torch.from_numpy(np.asarray(poisons, dtype=np.float32)), bases, eps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--eps", type=float, default=8, help="in 1/255 units")
    parser.add_argument("--budget", type=int, default=25)
    parser.add_argument("--gm-trials", type=int, default=3)
    parser.add_argument("--gm-budget", type=int, default=200)
    parser.add_argument("--gm-eps", type=float, default=16, help="in 1/255 units")
    parser.add_argument("--kinds", default="feature-collision,bullseye-polytope,witches-brew")
    parser.add_argument("--out", default="poisonlab-out/art-targeted", help="where the pretrained network is cached")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    torch.set_num_threads(2)
    for kind in args.kinds.split(","):
        compare(kind, args)


def compare(kind: str, args: argparse.Namespace) -> None:
    scratch = kind == "witches-brew"
    eps, budget, trials = (args.gm_eps, args.gm_budget, args.gm_trials) if scratch else \
        (args.eps, args.budget, args.trials)
    eps /= 255
    if trials < 1:
        return
    scenario = scenario_from_dict(dict(dataset="cifar10", data_root=args.data_root, train_size=4000, test_size=1000,
                                       sampling="first", model="convnet", attack=kind,
                                       setting="scratch" if scratch else "frozen", budget=budget, eps=eps,
                                       trials=trials,
                                       **({"recipe": SCRATCH_RECIPE, "pretrain": SCRATCH_RECIPE} if scratch else {})))
    ours = make_attack(kind)
    # each ART row: the iterations its bullseye runs (None: ART's default)
    arts = {"ART": None} | ({f"ART {ours.steps} it.": ours.steps} if kind == "bullseye-polytope" else {})
    counts = {tool: [0, 0.0] for tool in ("poisonlab", *arts)}
    first, hooks = None, 0
    _, networks, setups = prepare_trials(scenario, range(trials), f"{args.out}/models")
    reference = networks.reference
    for trial, setup in enumerate(setups):
        seed, data, adversarial = setup.seed, setup.data, setup.threat.target_class
        candidates = torch.nonzero(data.train.y == adversarial).squeeze(1)
        bases = candidates[torch.randperm(len(candidates), generator=generator(seed, "bases"))[:budget]]
        bases = bases.sort().values
        image = setup.threat.target_image
        threat = dataclasses.replace(setup.threat, base_indices=bases)
        for tool in counts:
            theirs = None if tool == "poisonlab" else art_copy(reference, scratch)  # fresh for each ART run, untimed
            start = time.perf_counter()
            if theirs is None:
                poison = ours.craft(data.train, threat, reference, seed=seed)
            else:
                x = art_poisons(kind, art_classifier(theirs), image, data.train.x[bases], adversarial, eps,
                                arts[tool])
                hooks = max(hooks, len(theirs.extractor._forward_hooks))
                poison = PoisonSet(bases, x, data.train.y[bases].clone(), 10, kind, adversarial)
            counts[tool][1] += time.perf_counter() - start
            victim = setup.victims.train(poison)
            counts[tool][0] += int(predict(victim, image)) == adversarial
            if trial == 0:
                first = (first or {}) | {tool: (poison.x, threat, setup.target.position)}
    for tool, (hits, seconds) in counts.items():
        print(f"{kind:18s} {tool:13s} success {hits}/{trials}  craft {seconds / trials:6.2f} s/trial", flush=True)
    print(f"{kind:18s} ART left up to {hooks} forward hooks on its copy of the network in one run")
    # the target-change check: same bases, another target (the next test image of another class)
    for tool, (poisons, threat, position) in first.items():
        other = data.test.x[(data.test.y != data.test.y[position]).nonzero()[0, 0]][None]
        changed = dataclasses.replace(threat, target_image=other)
        if tool == "poisonlab":
            again = ours.craft(data.train, changed, reference, seed=setups[0].seed).x
        else:
            again = art_poisons(kind, art_classifier(art_copy(reference, scratch)), other,
                                data.train.x[threat.base_indices], threat.target_class, eps, arts[tool])
        moved = (again - poisons).abs()
        print(f"{kind:18s} {tool:13s} another target moves the poisons by max {float(moved.max()):.4f} "
              f"(mean {float(moved.mean()):.5f})")


def art_copy(reference: nn.Module, second_order: bool) -> nn.Module:
    """A fresh copy of the network for one ART run (see art_classifier); NCHW for gradient matching, on which
    poisonlab's witches' brew crafts too (for_second_order), else the channels-last weights as they are."""
    return for_second_order(reference) if second_order else copy.deepcopy(reference)


# the toxic suite's scratch recipe (victims and the white-box surrogate): SGD, under which gradient matching works
SCRATCH_RECIPE = {"epochs": 30, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                  "weight_decay": 5e-4, "schedule": "cosine", "augment": "flip-crop"}


if __name__ == "__main__":
    main()
