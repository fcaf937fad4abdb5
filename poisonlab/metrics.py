"""Clean accuracy, test error and attack success rate: a count with its Wilson 95% interval for one trial (or one
Bernoulli per trial), and `TrialRates` for a rate pooled over the test images of several trials, whose interval
accounts for the trial-to-trial variation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from scipy import stats

from .data import Dataset
from .models import Classifier, predict
from .threat import PoisonSet


def wilson_interval(successes: float, trials: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (0, 1) when there are no trials. Counts may
    be effective (non-integer) sizes."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """`successes` out of `total` (test points, target images or trials, as the caller counts), with the Wilson
    95% interval."""

    successes: int
    total: int

    @property
    def value(self) -> float:
        return self.successes / self.total if self.total else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.total)


@lru_cache(maxsize=256)
def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class TrialRates:
    """A rate pooled over the units (test images, triggered images, a source class) of several trials: trial i
    counts `successes[i]` of `totals[i]`. Trials are the unit of replication, so the interval is a Wilson interval
    at the trial-clustered effective sample size: the pooled count's binomial variance is replaced by the
    cluster-robust (between-trial) variance of the ratio, at least the binomial one, and the normal quantile by
    Student's t with trials − 1 degrees of freedom. When every trial measured the same test images
    (`shared_units`), those images' own sampling variance (one trial's binomial variance, known) is added to the
    between-trial variance (estimated), since repeating them in every trial does not make them more, and the
    t quantile takes the Welch–Satterthwaite degrees of freedom of that sum. One trial: the plain Wilson
    interval, which covers the sampling of test images only (`method` says which)."""

    successes: tuple[int, ...]
    totals: tuple[int, ...]
    shared_units: bool = False

    def __post_init__(self) -> None:
        if len(self.successes) != len(self.totals) or not self.successes:
            raise ValueError(f"TrialRates needs one count and one total per trial (at least one trial); got "
                             f"{len(self.successes)} counts and {len(self.totals)} totals.")

    @property
    def value(self) -> float:
        total = sum(self.totals)
        return sum(self.successes) / total if total else float("nan")

    @property
    def per_trial(self) -> list[float | None]:
        """Each trial's own rate (None for a trial with no units)."""
        return [s / n if n else None for s, n in zip(self.successes, self.totals, strict=True)]

    @property
    def method(self) -> str:
        if len(self.successes) < 2:
            return "wilson, one trial (test-image sampling only)"
        return "wilson at the trial-clustered effective size, t quantile" + (", test images shared by the trials"
                                                                            if self.shared_units else "")

    @property
    def ci(self) -> tuple[float, float]:
        k, total = len(self.successes), sum(self.totals)
        if total == 0:
            return (0.0, 1.0)
        if k < 2:
            return wilson_interval(sum(self.successes), total)
        p = sum(self.successes) / total
        binomial = p * (1 - p) / total
        between = k / (k - 1) * sum((s - p * n) ** 2 for s, n in zip(self.successes, self.totals, strict=True)) \
            / total ** 2
        if self.shared_units:  # the victims' spread (estimated) plus the shared images' sampling (known)
            estimated, variance = between, between + p * (1 - p) * k / total
            # Welch-Satterthwaite: the degrees of freedom of a sum of an estimated and a known variance
            df = math.inf if estimated == 0 else (k - 1) * (variance / estimated) ** 2
        else:  # the spread between trials, all of it estimated (never below the binomial)
            variance, df = max(between, binomial), k - 1
        if variance <= 0:  # every unit succeeded (or none did): the shared images' width, or the pooled one at t
            if self.shared_units:
                return wilson_interval(p * total / k, total / k)
            return wilson_interval(p * total, total, t_quantile(k - 1))
        z = 1.959964 if df > 1e6 else t_quantile(max(1, int(df)))
        return wilson_interval(p * total * binomial / variance, total * binomial / variance, z)


def pct(value: float | None, ci: list[float] | tuple[float, float] | None = None) -> str:
    """A rate as a percentage with one decimal, its interval in brackets; "–" for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{100 * value:.1f}%"
    return f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else text


def clean_accuracy(model: Classifier, test: Dataset) -> Rate:
    return Rate(int((predict(model, test.x) == test.y).sum()), len(test))


def test_error(model: Classifier, test: Dataset) -> Rate:
    acc = clean_accuracy(model, test)
    return Rate(acc.total - acc.successes, acc.total)


@dataclass(frozen=True)
class AttackInputs:
    """The test inputs the attacker wants classified as `wanted` (one label per input)."""

    x: torch.Tensor
    wanted: torch.Tensor


def attack_inputs(poison: PoisonSet, test: Dataset, target_image: torch.Tensor | None = None) -> AttackInputs | None:
    """What an attack's success is measured on. Targeted: the target image(s), wanted as the attacker's class.
    Class-targeted (a source class): the test images of the source class, wanted as the target class. Backdoor:
    the test images the trigger should move (true class is not what the attacker wants for them). A trigger, when
    the set has one, is applied to every such input (a triggered targeted attack wants the target *with* the
    trigger). None for attacks without such a goal (availability)."""
    if target_image is not None:
        x, wanted = target_image, torch.full((len(target_image),), poison.target_class, dtype=torch.long)
    elif poison.source_class is not None:
        x = test.x[test.y == poison.source_class]
        wanted = torch.full((len(x),), poison.target_class, dtype=torch.long)
    elif poison.trigger is None:
        return None
    else:
        wanted = poison.backdoor_targets(test.y)
        eligible = wanted != test.y
        x, wanted = test.x[eligible], wanted[eligible]
    return AttackInputs(x if poison.trigger is None else poison.trigger.apply(x), wanted)


def attack_success_rate(model: Classifier, test: Dataset, poison: PoisonSet,
                        target_image: torch.Tensor | None = None) -> Rate | None:
    """The share of the attack's inputs (`attack_inputs`) that `model` classifies as the attacker wants."""
    inputs = attack_inputs(poison, test, target_image)
    if inputs is None:
        return None
    return Rate(int((predict(model, inputs.x) == inputs.wanted).sum()), len(inputs.wanted))
