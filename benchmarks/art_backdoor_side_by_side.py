"""clean-label-backdoor, hidden-trigger and sleeper-agent side by side with IBM's Adversarial Robustness Toolbox
(`PoisoningAttackCleanLabelBackdoor`, `HiddenTriggerBackdoorPyTorch`, `SleeperAgentAttack`), class-level, on the
same network, data, classes, bases, sources, trigger, budget and eps: the CIFAR-10 subset.

Clean-label backdoor: from scratch (the convnet surrogate pretrained by the toxic suite's SGD recipe on the 4,000
training images; each tool's poisons train a fresh convnet by the same recipe), 50 poisons at 16/255, the 3×3
bottom-right trigger, target classes `--targets`, trials `--trials` of each (the run's seeds); success =
triggered test images of the other classes classified as the target. ART runs its PGD (`eps_step` 2/255, 20
iterations, one random start: poisonlab's defaults) on the bases and its backdoor (poisonlab's trigger as the
perturbation function); its own `poison` draws the target-class images with replacement, so the script calls
those two steps on the bases directly.

Hidden trigger: JHT's frozen victims (extractor pretrained on the subset's images 2000–3999, a head trained by
JHT's SGD recipe on images 0–1999), pairs s → s + 1 for s < `--pairs`, 50 poisons at 16/255, the trigger in a
fixed place (5 pixels in from the bottom-right corner) for both; ART (given exactly the same bases and sources) at
its defaults (lr 0.001 × 0.95 every 2,000 iterations, up to 5,000, batches of 100), poisonlab at its defaults
(Adam 300 steps through the victim's flips and crops).

Sleeper agent: from scratch as the clean-label backdoor (pairs `--sa-pairs`, trials `--trials` of each), 40
poisons (1%) at 16/255, the 8x8 random-bit patch at random places, both tools selecting the target-class images of
largest gradient norm on the pretrained convnet and matching the gradient of all the source class's triggered
training images. poisonlab at its defaults (250 signed-Adam steps through flips and crops, the convnet retrained 4
times by its pretraining recipe) or with `--sa-params` (`retrain_every=0`: without retraining, as ART runs); ART
at its defaults (250 epochs, its schedule 0.1/0.01/0.001/0.0001, one trial) without its retraining: in ART 1.20.1
the model it retrains is not the one its gradient matching uses (bound with the source gradient before the
retraining loop), so retraining would only add time. The control (the clean convnet) is printed beside.
poisonlab's poisons are read from --out when a run of the same cell kept them there (`poisonlab run -c
sa-cell.yaml ... --out OUT`, docs/attacks/sleeper-agent.md), with the crafting time they took.

Prints each tool's pooled success, per target or pair, and crafting time. Needs the benchmark extra:
pip install -e ".[bench]".

python benchmarks/art_backdoor_side_by_side.py --data-root PATH/cifar10_subset.npz [--targets 0,2,5,7]
    [--trials 0,1] [--pairs 4] [--sa-pairs 3:5,0:1,1:2,2:3] [--sa-params retrain_every=0]
    [--kinds clean-label-backdoor,hidden-trigger,sleeper-agent]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time

import numpy as np
import torch
from torch import nn

from poisonlab.bench.scenario import parse_params, scenario_from_dict
from poisonlab.bench.trial import prepare_trials, reuse_or_craft
from poisonlab.bench.victims import control_victim
from poisonlab.device import keep_freed_memory
from poisonlab.metrics import attack_success_rate
from poisonlab.threat import PoisonSet

SCRATCH_RECIPE = {"epochs": 30, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                  "weight_decay": 5e-4, "schedule": "cosine", "augment": "flip-crop"}


def art_classifier(model: nn.Module):
    """ART's wrapper of a copy of `model` (ART leaves forward hooks on the networks it is given): layer 0 is the
    extractor (the features), layer 1 the head."""
    from art.estimators.classification import PyTorchClassifier

    sequential = nn.Sequential(copy.deepcopy(model.extractor), copy.deepcopy(model.head)).eval()
    return PyTorchClassifier(sequential, nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                             clip_values=(0.0, 1.0))


def art_backdoor(trigger):
    from art.attacks.poisoning import PoisoningAttackBackdoor

    return PoisoningAttackBackdoor(lambda x: trigger.apply(torch.from_numpy(np.asarray(x, np.float32))).numpy())


def clean_label(args: argparse.Namespace) -> None:
    from art.attacks.poisoning import PoisoningAttackCleanLabelBackdoor

    eps, rows = 16 / 255, {"poisonlab": [0, 0, 0.0, []], "ART": [0, 0, 0.0, []]}
    for target, trial in ((t, i) for t in args.targets for i in args.trials):
        scenario = scenario_from_dict(dict(dataset="cifar10", data_root=args.data_root, train_size=4000,
                                           test_size=1000, sampling="first", model="convnet",
                                           attack="clean-label-backdoor", setting="scratch", budget=50, eps=eps,
                                           trials=max(args.trials) + 1, target_class=target,
                                           recipe=SCRATCH_RECIPE, pretrain=SCRATCH_RECIPE))
        plan, networks, [setup] = prepare_trials(scenario, [trial], f"{args.out}/models")
        train, threat = setup.data.train, setup.threat
        start = time.perf_counter()
        ours = plan.attack.craft(train, threat, networks.surrogate, seed=setup.seed)
        ours_s = time.perf_counter() - start
        onehot = np.eye(10, dtype=np.float32)[target]
        start = time.perf_counter()
        attack = PoisoningAttackCleanLabelBackdoor(art_backdoor(ours.trigger), art_classifier(networks.surrogate),
                                                   onehot, pp_poison=0.5, eps=eps, eps_step=2 / 255, max_iter=20,
                                                   num_random_init=1)
        hard = attack.attack.generate(train.x[ours.indices].numpy())
        x, _ = attack.backdoor.poison(hard, onehot, broadcast=True)
        theirs = PoisonSet(ours.indices, torch.from_numpy(np.asarray(x, np.float32)).clamp(0, 1), ours.y.clone(), 10,
                           "art-clean-label-backdoor", target, ours.trigger, "all-to-one")
        art_s = time.perf_counter() - start
        measure(rows, setup, {"poisonlab": (ours, ours_s), "ART": (theirs, art_s)},
                f"clean-label-backdoor target {target} trial {trial}")
    report("clean-label-backdoor", rows, len(args.targets) * len(args.trials))


def hidden_trigger(args: argparse.Namespace) -> None:
    from art.attacks.poisoning import HiddenTriggerBackdoorPyTorch

    eps, rows = 16 / 255, {"poisonlab": [0, 0, 0.0, []], "ART": [0, 0, 0.0, []]}
    for source in range(args.pairs):
        target = (source + 1) % 10
        scenario = scenario_from_dict(dict(dataset="cifar10", data_root=args.data_root, train_size=2000,
                                           test_size=1000, sampling="first", protocol="jht", model="convnet",
                                           attack="hidden-trigger", setting="frozen", budget=50, eps=eps, trials=1,
                                           source_class=source, target_class=target,
                                           attack_params={"placement": "fixed"}))
        plan, networks, [setup] = prepare_trials(scenario, [0], f"{args.out}/models")
        train, threat = setup.data.train, setup.threat
        start = time.perf_counter()
        ours = plan.attack.craft(train, threat, networks.surrogate, seed=setup.seed)
        ours_s = time.perf_counter() - start
        _, sources, _ = plan.attack.open(train, threat, [networks.surrogate], setup.seed)
        start = time.perf_counter()
        # ART 1.20.1's `is_index=True` always raises ("There is a source class that is labeled as the target
        # indices": it tests the target indices' own labels); so it gets exactly the bases and sources as its data,
        # class labels, and poison_percent=1 (all 50 bases, all 50 sources)
        both = torch.cat([ours.indices, sources])
        onehot = np.eye(10, dtype=np.float32)
        attack = HiddenTriggerBackdoorPyTorch(art_classifier(networks.surrogate), onehot[target], onehot[source], 0,
                                              art_backdoor(ours.trigger), eps=eps, poison_percent=1.0,
                                              verbose=False, print_iter=10**9)
        x, positions = attack.poison(train.x[both].numpy(), onehot[train.y[both].numpy()])
        art_s = time.perf_counter() - start
        chosen = both[torch.as_tensor(positions, dtype=torch.long)]
        theirs = PoisonSet(chosen, torch.from_numpy(np.asarray(x, np.float32)), train.y[chosen].clone(), 10,
                           "art-hidden-trigger", target, ours.trigger, source_class=source)
        measure(rows, setup, {"poisonlab": (ours, ours_s), "ART": (theirs, art_s)},
                f"hidden-trigger {source} -> {target}")
    report("hidden-trigger", rows, args.pairs)


def sleeper_agent(args: argparse.Namespace) -> None:
    import random

    from art.attacks.poisoning import SleeperAgentAttack

    # 16/255 as the page's cell writes it, so that this is the same scenario (hash) as its runs
    eps, rows = 0.0627450980392, {"poisonlab": [0, 0, 0.0, []], "ART": [0, 0, 0.0, []]}
    control = [0, 0]
    for (source, target), trial in itertools.product(args.sa_pairs, args.trials):
        scenario = scenario_from_dict(dict(dataset="cifar10", data_root=args.data_root, train_size=4000,
                                           test_size=1000, sampling="first", model="convnet", attack="sleeper-agent",
                                           setting="scratch", budget=40, eps=eps, trials=trial + 1,
                                           source_class=source, target_class=target, recipe=SCRATCH_RECIPE,
                                           pretrain=SCRATCH_RECIPE, attack_params=args.sa_params))
        plan, networks, [setup] = prepare_trials(scenario, [trial], f"{args.out}/models")
        train = setup.data.train
        # a run of the same cell into the same --out kept these poisons (crafting is deterministic): read them
        [(ours, ours_s)] = reuse_or_craft(plan, networks, [setup], f"{args.out}/models")
        patch = ours.trigger.pattern[:, -plan.attack.patch_size:, -plan.attack.patch_size:].numpy()
        x, y = train.x.numpy(), train.y.numpy()
        onehot = np.eye(10, dtype=np.float32)
        in_target = np.flatnonzero(y == target)
        sources = x[y == source]
        random.seed(setup.seed)  # ART places the patch on the sources by Python's `random`
        start = time.perf_counter()
        attack = SleeperAgentAttack(art_classifier(networks.surrogate), (len(ours) + 0.5) / len(in_target), patch,
                                    in_target, epsilon=eps, max_trials=1, max_epochs=250, verbose=0,
                                    patching_strategy="random", selection_strategy="max-norm", class_source=source,
                                    class_target=target)
        poisoned, _ = attack.poison(sources, np.tile(onehot[target], (len(sources), 1)), x, onehot[y],
                                    setup.data.test.x.numpy(), onehot[setup.data.test.y.numpy()])
        art_s = time.perf_counter() - start
        chosen = torch.as_tensor(np.sort(in_target[attack.get_poison_indices()]), dtype=torch.long)
        theirs = PoisonSet(chosen, torch.from_numpy(np.asarray(poisoned[chosen.numpy()], np.float32)),
                           train.y[chosen].clone(), 10, "art-sleeper-agent", target, ours.trigger, "all-to-one",
                           source_class=source)
        clean = attack_success_rate(control_victim(setup.victims, setup.trial, f"{args.out}/models"),
                                    setup.data.test, ours)
        control[0] += clean.successes
        control[1] += clean.total
        print(f"sleeper-agent {source} -> {target}, trial {trial}: control {clean.successes}/{clean.total}; ART chose "
              f"{len(np.intersect1d(chosen.numpy(), ours.indices.numpy()))} of poisonlab's {len(ours)} images",
              flush=True)
        measure(rows, setup, {"poisonlab": (ours, ours_s), "ART": (theirs, art_s)},
                f"sleeper-agent {source} -> {target}, trial {trial}")
    report("sleeper-agent", rows, len(args.sa_pairs) * len(args.trials))
    print(f"{'sleeper-agent':20s} {'control':9s} pooled success {control[0]}/{control[1]} = "
          f"{control[0] / control[1]:.1%}", flush=True)


def measure(rows: dict, setup, tools: dict, what: str) -> None:
    """Each tool's poisons train the trial's victim (the same seed); its triggered success and crafting time
    join the tool's row."""
    for tool, (poison, seconds) in tools.items():
        rate = attack_success_rate(setup.victims.train(poison), setup.data.test, poison)
        rows[tool][0] += rate.successes
        rows[tool][1] += rate.total
        rows[tool][2] += seconds
        rows[tool][3].append(rate.successes / rate.total)
    print(f"{what}: " + ", ".join(f"{tool} {rows[tool][3][-1]:.1%} ({seconds:.2f} s)"
                                  for tool, (_, seconds) in tools.items()), flush=True)


def report(kind: str, rows: dict, n: int) -> None:
    for tool, (hits, total, seconds, _) in rows.items():
        print(f"{kind:20s} {tool:9s} pooled success {hits}/{total} = {hits / total:.1%}  craft "
              f"{seconds / n:7.2f} s per target", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--targets", default="0,2,5,7", help="the clean-label backdoor's target classes")
    parser.add_argument("--trials", default="0", help="trial numbers per target (clean-label backdoor) or pair "
                        "(sleeper agent)")
    parser.add_argument("--pairs", type=int, default=4, help="hidden trigger: pairs s -> s + 1, s < PAIRS")
    parser.add_argument("--sa-pairs", default="3:5,0:1,1:2,2:3", help="sleeper agent: source:target pairs")
    parser.add_argument("--sa-params", default="", help="poisonlab sleeper-agent's parameters, KEY=VALUE,... "
                        "(as `-p`; e.g. retrain_every=0)")
    parser.add_argument("--kinds", default="clean-label-backdoor,hidden-trigger,sleeper-agent")
    parser.add_argument("--out", default="poisonlab-out/art-backdoor", help="where pretrained networks are cached")
    args = parser.parse_args()
    args.targets = [int(t) for t in args.targets.split(",")]
    args.trials = [int(t) for t in args.trials.split(",")]
    args.sa_params = parse_params([p for p in args.sa_params.split(",") if p])
    args.sa_pairs = [tuple(int(c) for c in pair.split(":")) for pair in args.sa_pairs.split(",")]
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    torch.set_num_threads(2)
    kinds = {"clean-label-backdoor": clean_label, "hidden-trigger": hidden_trigger, "sleeper-agent": sleeper_agent}
    for kind in args.kinds.split(","):
        kinds[kind](args)


if __name__ == "__main__":
    main()
