"""Detectors against a backdoor: recall and precision of the removal, AUROC, and attack success after retraining on
the kept data, per detector and removal rule, over several budgets, target classes and seeds. A rule is a ranking
(`global`, `per-class`: the top 1.5x budget by score removed; activation clustering's `rule=score`, deep k-NN's
`rule=top`) or a detector's own rule as KEY=VALUE (`rule=size` for
activation clustering's relative-size rule, `rule=plurality` for deep k-NN's vote); a rule a detector does not
have is skipped for it. Each (target class, seed) is a trial: one poisoned victim, shared by every detector and
rule; the summary lines pool the trials with trial-clustered intervals (`poisonlab.metrics.TrialRates`).

    python benchmarks/detectors.py --dataset fashion-mnist --train-size 6000 --budgets 0.01 0.05 0.1 \\
        --attacks badnets blended --targets 7 2 --seeds 0 1 --defenses spectral-signatures \\
        --rankings per-class global
    python benchmarks/detectors.py ... --defenses activation-clustering deep-knn spectre \
        --rankings global per-class rule=size rule=plurality
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from poisonlab import ThreatModel, build_model, load_dataset, make_attack, train
from poisonlab.defenses import DEFENSES, Detector, detection_counts, make_defense
from poisonlab.defenses.detect import representation
from poisonlab.device import keep_freed_memory
from poisonlab.errors import ConfigError
from poisonlab.metrics import TrialRates, attack_success_rate, clean_accuracy, pct
from poisonlab.models import TrainRecipe

PARAMS = {"badnets": {"patch_size": 4, "margin": 1, "pattern": "checkerboard"}, "blended": {"alpha": 0.2}}
# the rule of each detector that removes by a ranking of scores, where its default is another (its paper's)
SCORED = {"activation-clustering": {"rule": "score"}, "deep-knn": {"rule": "top"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.05])
    parser.add_argument("--attacks", nargs="+", default=["badnets"])
    parser.add_argument("--targets", type=int, nargs="+", default=[7])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--defenses", nargs="+", default=[n for n, c in DEFENSES.items() if issubclass(c, Detector)])
    parser.add_argument("--rankings", nargs="+", default=["per-class", "global"])
    parser.add_argument("--no-retrain", action="store_true", help="Skip retraining (no attack success after it).")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs (poisonlab.device)
    torch.set_num_threads(2)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=64, lr=0.002, schedule="cosine")
    splits = load_dataset(args.dataset)
    results = defaultdict(list)  # (attack, budget, detector, ranking) -> per-trial tuples
    for attack in args.attacks:
        for budget in args.budgets:
            for target in args.targets:
                for seed in args.seeds:
                    trial(args, splits, recipe, attack, budget, target, seed, results)
    print("\nsummary (trials pooled; recall and attack success with trial-clustered 95% intervals)")
    for (attack, budget, name, ranking), rows in results.items():
        caught, present, removed, asr_hits, asr_inputs, clean = zip(*rows, strict=True)
        recall = TrialRates(caught, present)
        line = (f"{attack} {budget:g} {name} {ranking}: recall {pct(recall.value, recall.ci)}, precision "
                f"{pct(sum(caught) / max(sum(removed), 1))}, {len(rows)} trials")
        if all(n is not None for n in asr_inputs):
            asr = TrialRates(asr_hits, asr_inputs)
            line += (f", attack success after retraining {pct(asr.value, asr.ci)}, clean accuracy after retraining "
                     f"{pct(sum(clean) / len(clean))}")
        print(line, flush=True)


def trial(args, splits, recipe, attack, budget, target, seed, results) -> None:
    data = splits.subset(None, args.train_size, args.test_size, seed=seed)
    threat = ThreatModel.for_data(data.train, budget, target_class=target)
    poison = make_attack(attack, **PARAMS.get(attack, {})).craft(data.train, threat, seed=seed)
    poisoned = poison.apply(data.train)
    is_poison = poison.is_poison(poisoned)
    start = time.perf_counter()
    model = train(build_model("convnet", data.train.shape, 10, seed=seed), poisoned, recipe, seed=seed)
    asr = attack_success_rate(model, data.test, poison)
    print(f"{attack} {budget:g} target {target} seed {seed}: poisoned victim clean "
          f"{clean_accuracy(model, data.test).value:.3f} ASR {asr.value:.3f} ({time.perf_counter() - start:.0f} s)",
          flush=True)
    for name in args.defenses:
        for ranking in args.rankings:
            key, _, value = ranking.partition("=")
            try:
                params = {key: value} if value else {"ranking": ranking, **SCORED.get(name, {})}
                defense = make_defense(name, **params)
            except (ConfigError, TypeError):
                continue  # a rule this detector does not have
            start = time.perf_counter()
            z = representation(poisoned, model if defense.needs_model else None, defense.space)
            scores = defense.score_representation(z, poisoned.y, seed)
            keep = defense.kept(z, poisoned.y, scores, threat.budget, seed)
            seconds = time.perf_counter() - start
            m = detection_counts(scores, is_poison, keep)
            line = (f"  {name:<22} {ranking:<9} recall {m.removed_poisons / m.n_poisons_present:.3f} "
                    f"precision {m.removed_poisons / max(m.n_removed, 1):.3f} AUROC {m.detection_auroc:.3f} "
                    f"removed {m.n_removed} ({seconds:.1f} s)")
            hits = inputs = accuracy = None
            if not args.no_retrain:
                kept = poisoned.take(torch.nonzero(keep).squeeze(1))
                defended = train(build_model("convnet", data.train.shape, 10, seed=seed), kept, recipe, seed=seed)
                after = attack_success_rate(defended, data.test, poison)
                hits, inputs, accuracy = after.successes, after.total, clean_accuracy(defended, data.test).value
                line += f"  retrained: clean {accuracy:.3f} ASR {after.value:.3f}"
            print(line, flush=True)
            results[attack, budget, name, ranking].append((m.removed_poisons, m.n_poisons_present, m.n_removed,
                                                           hits, inputs, accuracy))


if __name__ == "__main__":
    main()
