"""How "Just How Toxic" drew its targets, read from its setups: does the toxic suite's reference network classify
JHT's CIFAR-10 targets correctly more often than it classifies the test images at large?

JHT's repository ships the setups (target, adversarial class, bases) but not how their targets were drawn. A
uniform draw from the test set would be classified correctly about as often as any test image; a draw among the
images JHT's own network classified correctly would be classified correctly more often by another network too
(the images that are hard for one network tend to be hard for another). The script pretrains (or loads from
--out) the toxic suite's frozen white-box reference, takes every CIFAR-10 target of the setups files that lies in
the loaded test split, and prints its accuracy on them beside its accuracy on the whole split, with a one-sided
exact binomial test.

python benchmarks/jht_targets.py --data-root PATH/cifar10_subset.npz --setups PATH/poisoning-benchmark-setups
    [--out runs/jht-targets]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scipy.stats import binomtest

from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.bench.setups import load_setups, usable_setups
from poisonlab.bench.shared import NETWORK_FIELDS, networks_for
from poisonlab.bench.suites import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--setups", required=True, help="the folder of JHT's setups JSON files (searched below)")
    parser.add_argument("--out", default="runs/jht-targets", help="where the pretrained networks are cached")
    args = parser.parse_args()
    files = sorted(Path(args.setups).rglob("cifar10*.json"))
    if not files:
        raise SystemExit(f"no cifar10*.json setups file under {args.setups}; expected JHT's setups folder.")
    suite = load_suite("toxic", args.data_root, 1, None, None, None, None)
    cell = next(s for s in suite.scenarios if s.setting == "frozen" and s.knowledge == "white-box")
    cell = scenario_from_dict({**cell.model_dump(), "trials": 1})
    networks = networks_for(cell.model_dump_json(include=NETWORK_FIELDS), str(Path(args.out) / "models"))
    test = networks.data.test
    right = networks.reference_predictions() == test.y
    where = {int(v): i for i, v in enumerate(test.index.tolist())}
    targets = sorted({s.target_image_index for f in files for _, s in usable_setups(load_setups(str(f)), test)})
    hits = int(right[[where[t] for t in targets]].sum())
    overall = float(right.float().mean())
    p = binomtest(hits, len(targets), overall, alternative="greater").pvalue
    print(f"setups files: {len(files)}; distinct CIFAR-10 targets in the loaded test split: {len(targets)}")
    print(f"reference accuracy on them: {hits}/{len(targets)} = {hits / len(targets):.1%}; "
          f"on all {len(test)} test images: {overall:.1%}; one-sided exact binomial p = {p:.3f}")


if __name__ == "__main__":
    main()
