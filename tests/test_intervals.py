"""Intervals on rates pooled over the test images of several trials hold their nominal coverage when victims
vary from trial to trial (simulated experiments with known between-trial variance); the pooled Wilson
interval, which counts every image-trial as independent, does not."""

import numpy as np
import pytest

from poisonlab.metrics import TrialRates, wilson_interval

EXPERIMENTS = 1000  # per configuration; the simulation is seeded, so the figures are fixed
IMAGES = 360  # digits' test split


def beta_binomial(rng, trials: int, mean: float, sd: float) -> np.ndarray:
    """Each trial's victim has its own rate (Beta with `mean` and between-trial `sd`) on fresh test images."""
    common = mean * (1 - mean) / sd ** 2 - 1
    rates = rng.beta(mean * common, (1 - mean) * common, (EXPERIMENTS, trials))
    return rng.binomial(IMAGES, rates)


def shared_images(rng, trials: int, mean_logit: float, victim_sd: float) -> tuple[np.ndarray, float]:
    """Every trial tests the same images (each with its own difficulty) and each victim adds its own shift on
    the logit scale; the truth is the rate over images and victims."""
    difficulty = rng.normal(0, 1, (EXPERIMENTS, 1, IMAGES))
    victim = rng.normal(0, victim_sd, (EXPERIMENTS, trials, 1))
    hits = rng.random((EXPERIMENTS, trials, IMAGES)) < 1 / (1 + np.exp(-(mean_logit + difficulty + victim)))
    population = 1 / (1 + np.exp(-(mean_logit + rng.normal(0, 1, 400_000) + rng.normal(0, victim_sd, 400_000))))
    return hits.sum(2), float(population.mean())


def coverage(counts: np.ndarray, truth: float, shared: bool) -> tuple[float, float]:
    """The share of experiments whose interval covers `truth`: trial-clustered, then pooled Wilson."""
    ours = pooled = 0
    for row in counts:
        rates = TrialRates(tuple(int(c) for c in row), (IMAGES,) * len(row), shared)
        low, high = rates.ci
        ours += low <= truth <= high
        low, high = wilson_interval(int(row.sum()), IMAGES * len(row))
        pooled += low <= truth <= high
    return ours / len(counts), pooled / len(counts)


@pytest.mark.parametrize(("trials", "mean", "sd"), [(3, 0.5, 0.05), (5, 0.9, 0.03), (10, 0.2, 0.1), (24, 0.5, 0.05),
                                                    (5, 0.97, 0.02)])
def test_trial_clustered_interval_covers_when_victims_vary_on_fresh_test_images(trials, mean, sd):
    rng = np.random.default_rng(trials)
    ours, pooled = coverage(beta_binomial(rng, trials, mean, sd), mean, shared=False)
    assert ours >= 0.93, f"trial-clustered interval covers {ours:.1%} at 95% nominal"
    assert pooled < 0.93, f"pooled Wilson covers {pooled:.1%}; this configuration does not tell them apart"


@pytest.mark.parametrize(("trials", "mean_logit", "victim_sd"), [(3, 2.0, 0.3), (10, 0.0, 0.4), (24, 3.5, 0.2)])
def test_trial_clustered_interval_covers_when_every_trial_tests_the_same_images(trials, mean_logit, victim_sd):
    rng = np.random.default_rng(100 + trials)
    counts, truth = shared_images(rng, trials, mean_logit, victim_sd)
    ours, pooled = coverage(counts, truth, shared=True)
    assert ours >= 0.93, f"trial-clustered interval covers {ours:.1%} at 95% nominal"
    assert pooled < 0.93, f"pooled Wilson covers {pooled:.1%}; this configuration does not tell them apart"


def test_one_trial_is_the_wilson_interval_and_says_so():
    rates = TrialRates((300,), (360,))
    assert rates.ci == wilson_interval(300, 360)
    assert "one trial" in rates.method


def test_unanimous_trials_keep_a_width():
    """Every image of every trial succeeded: the interval is not the point [1, 1]."""
    low, high = TrialRates((360, 360, 360), (360, 360, 360), shared_units=True).ci
    assert high == 1.0 and 0.9 < low < 0.999
    assert TrialRates((360, 360, 360), (360, 360, 360)).ci[0] < TrialRates((360, 360, 360), (360, 360, 360)).value


def test_between_trial_spread_widens_the_interval():
    steady = TrialRates((180, 180, 180, 180), (360,) * 4)
    spread = TrialRates((120, 240, 150, 210), (360,) * 4)
    assert steady.value == spread.value == 0.5
    assert spread.ci[1] - spread.ci[0] > 3 * (steady.ci[1] - steady.ci[0])
    assert spread.per_trial == [120 / 360, 240 / 360, 150 / 360, 210 / 360]


def test_counts_and_totals_must_pair():
    with pytest.raises(ValueError, match="one count and one total per trial"):
        TrialRates((1, 2), (3,))
