"""svm-kkt side by side with IBM's Adversarial Robustness Toolbox `PoisoningAttackSVM`.

Same data (MNIST 0 vs 4 from the real MNIST test images, poisonlab's seeded split: 100 training, 500 validation,
1,200 test points), same SVM (scikit-learn's SVC, linear kernel, C = 1), same number of poison points starting
from the same flipped-label clones; prints each tool's wall time and the test error of the SVM retrained on the
training set plus its poisons. Needs the benchmark extra: pip install -e ".[bench]".

python benchmarks/art_svm_side_by_side.py --data-root PATH/TO/mnist [--poisons 10] [--splits 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.svm import SVC

from poisonlab import ThreatModel, load_dataset, make_attack
from poisonlab.seeding import derive_seed


def test_error(x, y, xp, yp, xt, yt) -> float:
    svm = SVC(kernel="linear", C=1.0).fit(np.concatenate([x, xp]), np.concatenate([y, yp]))
    return float((svm.predict(xt) != yt).mean())


def run_art(x, y, xv, yv, x_init, y_attack, step: float, max_iter: int) -> np.ndarray:
    from art.attacks.poisoning import PoisoningAttackSVM
    from art.estimators.classification import SklearnClassifier

    onehot = np.eye(2)
    # probability=False spelled out: scikit-learn 1.9 deprecates the parameter and its default sentinel is truthy,
    # which sends ART down its predict_proba path
    classifier = SklearnClassifier(model=SVC(kernel="linear", C=1.0, probability=False), clip_values=(0.0, 1.0))
    classifier.fit(x, onehot[y])
    attack = PoisoningAttackSVM(classifier, step=step, eps=1.0, x_train=x, y_train=onehot[y], x_val=xv,
                                y_val=onehot[yv], max_iter=max_iter)
    poisons, _ = attack.poison(x_init.copy(), y=onehot[y_attack])
    return poisons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder with t10k-images/labels-idx*-ubyte.gz")
    parser.add_argument("--poisons", type=int, default=10)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--art-step", type=float, default=0.1, help="ART's step (its documented example value)")
    parser.add_argument("--art-max-iter", type=int, default=100)
    args = parser.parse_args()
    splits = load_dataset("mnist-t10k", root=args.data_root)
    rows = []
    for split in range(args.splits):
        seed = derive_seed(0, "trial", split)
        data = splits.subset([0, 4], train_size=100, val_size=500, test_size=1200, seed=seed)
        flat = lambda d: (d.x.flatten(1).double().numpy(), d.y.numpy())  # noqa: E731
        (x, y), (xv, yv), (xt, yt) = flat(data.train), flat(data.val), flat(data.test)
        threat = ThreatModel.for_data(data.train, args.poisons)
        start = time.perf_counter()
        poison = make_attack("svm-kkt").craft(data.train, threat, seed=seed, validation=data.val)
        ours_s = time.perf_counter() - start
        xp, yp = poison.x.flatten(1).double().numpy(), poison.y.numpy()
        x_init, y_attack = x[poison.indices.numpy()], 1 - y[poison.indices.numpy()]  # the same starting points
        start = time.perf_counter()
        art_points = run_art(x, y, xv, yv, x_init, y_attack, args.art_step, args.art_max_iter)
        art_s = time.perf_counter() - start
        rows.append((test_error(x, y, xp[:0], yp[:0], xt, yt), test_error(x, y, xp, yp, xt, yt), ours_s,
                     test_error(x, y, art_points, y_attack, xt, yt), art_s))
        print(f"split {split}: clean {rows[-1][0]:.3f} | poisonlab svm-kkt {rows[-1][1]:.3f} in {ours_s:.2f} s | "
              f"ART PoisoningAttackSVM {rows[-1][3]:.3f} in {art_s:.2f} s", flush=True)
    clean, ours, ours_s, art, art_s = np.mean(rows, axis=0)
    print(f"mean over {args.splits} splits, {args.poisons} poison points: clean test error {clean:.3f}; "
          f"poisonlab {ours:.3f} in {ours_s:.2f} s; ART {art:.3f} in {art_s:.2f} s; speed-up {art_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
