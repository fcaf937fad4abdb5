"""Paired comparisons: the exact McNemar test, Newcombe's interval, the paired t-test, and which trials pair."""

import math

import pytest
from scipy import stats

from poisonlab.bench.compare import compare_rows, comparisons, mcnemar, newcombe, paired_t


def test_exact_mcnemar_counts_only_discordant_trials():
    """7 trials hit by A alone and 1 by B alone: p = 2 · P(X <= 1 | 8, 1/2) = 18/256."""
    x = [1] * 7 + [0] * 1 + [1] * 5 + [0] * 11
    y = [0] * 7 + [1] * 1 + [1] * 5 + [0] * 11
    paired = mcnemar("a", "b", "attack_success_rate", x, y, 0)
    assert (paired.a_only, paired.b_only, paired.trials) == (7, 1, 24)
    assert paired.p_value == pytest.approx(18 / 256)
    assert paired.difference == pytest.approx(6 / 24)
    assert mcnemar("a", "b", "attack_success_rate", [1, 0], [1, 0], 0).p_value == 1.0


def test_newcombe_interval_holds_the_difference_and_flips_with_the_order():
    low, high = newcombe(5, 7, 1, 11)
    assert low < 6 / 24 < high and -1 <= low and high <= 1
    back = newcombe(5, 1, 7, 11)
    assert back == pytest.approx((-high, -low))
    assert newcombe(50, 70, 10, 110)[1] - newcombe(50, 70, 10, 110)[0] < high - low


def test_paired_t_matches_scipy():
    x, y = [0.9, 0.8, 0.95, 0.7], [0.5, 0.6, 0.4, 0.65]
    paired = paired_t("a", "b", "attack_success_rate", x, y, 0)
    assert paired.p_value == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert paired.difference == pytest.approx(sum(x) / 4 - sum(y) / 4)
    one = paired_t("a", "b", "attack_success_rate", [0.9], [0.1], 0)
    assert one.p_value == 1.0 and one.ci == (-1.0, 1.0)


def row(attack, hits, targets, bases, key="cell", trials=None):
    trials = trials or list(range(len(hits)))
    return {"scenario": attack, "attack": attack, "pairing_key": key, "targeted": True, "dataset": "digits",
            "model": "convnet", "setting": "frozen", "knowledge": "white-box", "n_poisons": 2, "eps": 0.1,
            "defense": "none", "attack_success_rate": sum(hits) / len(hits),
            "attack_success_ci_method": "wilson over trials (one Bernoulli per trial)",
            "attack_success_rate_per_trial": hits, "control_attack_success_rate": 0.0,
            "control_attack_success_rate_per_trial": [0] * len(hits), "trial_per_trial": trials,
            "seed_per_trial": [100 + t for t in trials], "target_image_index_per_trial": targets,
            "target_class_per_trial": [1] * len(hits), "base_indices_per_trial": bases}


def test_trials_with_another_target_or_bases_are_counted_unpaired_not_matched():
    bases = [[1, 2], [3, 4], [5, 6]]
    a = row("fc", [1, 0, 1], [10, 11, 12], bases)
    b = row("bp", [1, 1, 1], [10, 11, 99], [[1, 2], [3, 9], [5, 6]])
    paired = compare_rows(a, b)
    assert (paired.trials, paired.unpaired) == (1, 4)  # trial 0 pairs; trials 1 and 2 differ, on each side
    assert compare_rows(a, row("bp", [1, 1], [10, 11], bases[:2])).unpaired == 1


def test_a_cell_compares_each_attack_with_its_control_and_the_others():
    bases = [[1, 2], [3, 4]]
    rows = [row("fc", [1, 0], [10, 11], bases), row("bp", [1, 1], [10, 11], bases),
            row("cp", [0, 0], [10, 11], bases, key="another cell")]
    found = comparisons(rows)
    assert [(p.a, p.b) for _, p in found] == [("fc", "control"), ("bp", "control"), ("fc", "bp"), ("cp", "control")]
    assert all(not math.isnan(p.difference) for _, p in found)
