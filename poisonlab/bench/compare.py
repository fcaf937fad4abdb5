"""Paired comparisons of two attacks on the same trials.

Trial i of every scenario with the same seed gets the same data, victims' initialisation and (targeted) the same
target and bases, so two attacks on one cell differ only by their poisons. A comparison pairs the trials two
summary rows share (same trial number and seed; for targeted rows also the same target image and bases; any
other trial is counted as unpaired, never silently matched) and reports the paired difference of attack
success: with one Bernoulli per trial (a targeted attack), the exact McNemar test on the discordant trials and
Newcombe's interval for a difference of paired proportions; with a rate per trial (backdoors, availability's
test error), the paired t-test and t-interval over the per-trial differences."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

from ..metrics import pct, t_quantile, wilson_interval
from .scenario import Scenario

# What two scenarios of one cell may differ in: the attack (and its parameters), the name, how many trials ran,
# where the data and the computation lie.
PAIRING_EXCLUDES = {"name", "attack", "attack_params", "trials", "device", "data_root"}


def pairing_key(scenario: Scenario) -> str:
    """The hash of what two scenarios must share for their trials to pair (everything but the attack)."""
    return scenario.hash_of(set(type(scenario).model_fields) - PAIRING_EXCLUDES)


@dataclass(frozen=True)
class Paired:
    """`a` against `b` over `trials` paired trials (`unpaired`: trials one row has and the other lacks, or that
    meet another target or bases). `a_rate`, `b_rate`: their mean success on the paired trials;
    `difference` = a − b with its 95% interval and the test's two-sided p-value; `a_only`, `b_only`: the
    discordant trials (one Bernoulli per trial only)."""

    a: str
    b: str
    measure: str
    trials: int
    unpaired: int
    a_rate: float
    b_rate: float
    difference: float
    ci: tuple[float, float]
    p_value: float
    test: str
    a_only: int | None = None
    b_only: int | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"ci": list(self.ci)}


def measure_of(row: dict) -> str:
    """What a row's attack changes: its attack success (integrity), else the test error (availability)."""
    return "attack_success_rate" if row.get("attack_success_rate") is not None else "test_error"


def trial_keys(row: dict) -> list[tuple]:
    """What makes trial i of one row the same trial as of another: its number, seed, and for a targeted row
    the target image, the attacker's class and the bases."""
    keys = list(zip(row["trial_per_trial"], row["seed_per_trial"], strict=True))
    if row.get("targeted"):
        targeted = zip(row["target_image_index_per_trial"], row["target_class_per_trial"],
                       (tuple(b) for b in row["base_indices_per_trial"]), strict=True)
        keys = [k + t for k, t in zip(keys, targeted, strict=True)]
    return keys


def compare_rows(a: dict, b: dict, a_name: str | None = None, b_name: str | None = None,
                 b_field: str | None = None) -> Paired:
    """`a`'s attack against `b`'s on their paired trials. `b_field` compares with another per-trial measure of
    `b` (e.g. `control_attack_success_rate` of the same row: the attack against its control)."""
    field = measure_of(a)
    b_field = b_field or field
    a_values = dict(zip(trial_keys(a), a[f"{field}_per_trial"], strict=True))
    b_values = dict(zip(trial_keys(b), b[f"{b_field}_per_trial"], strict=True))
    shared = [k for k in a_values if k in b_values and a_values[k] is not None and b_values[k] is not None]
    unpaired = len(set(a_values) ^ set(b_values)) + sum(1 for k in a_values if k in b_values and k not in shared)
    x, y = [a_values[k] for k in shared], [b_values[k] for k in shared]
    names = (a_name or a["scenario"], b_name or b["scenario"])
    binary = field == "attack_success_rate" and a.get("attack_success_ci_method", "").startswith("wilson over trials")
    return (mcnemar if binary else paired_t)(*names, field, x, y, unpaired)


def mcnemar(a: str, b: str, field: str, x: list, y: list, unpaired: int) -> Paired:
    """Exact McNemar: under no difference, each discordant trial is a fair coin."""
    n = len(x)
    a_only = sum(1 for u, v in zip(x, y, strict=True) if u and not v)
    b_only = sum(1 for u, v in zip(x, y, strict=True) if v and not u)
    both = sum(1 for u, v in zip(x, y, strict=True) if u and v)
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else min(1.0, 2 * stats.binom.cdf(min(a_only, b_only), discordant, 0.5))
    ci = newcombe(both, a_only, b_only, n - both - discordant) if n else (-1.0, 1.0)
    return Paired(a, b, field, n, unpaired, (both + a_only) / n if n else math.nan,
                  (both + b_only) / n if n else math.nan, (a_only - b_only) / n if n else math.nan, ci, float(p),
                  "exact McNemar", a_only, b_only)


def newcombe(both: int, a_only: int, b_only: int, neither: int) -> tuple[float, float]:
    """Newcombe's (1998, method 10) score interval for the difference of two paired proportions."""
    n = both + a_only + b_only + neither
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson_interval(both + a_only, n)
    l2, u2 = wilson_interval(both + b_only, n)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / math.sqrt(margins) if margins else 0.0
    difference = p1 - p2
    low = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, difference - low), min(1.0, difference + high))


def paired_t(a: str, b: str, field: str, x: list, y: list, unpaired: int) -> Paired:
    """The paired t-test and t-interval over per-trial differences (undefined below two trials: p = 1 and the
    widest interval)."""
    n = len(x)
    diffs = [u - v for u, v in zip(x, y, strict=True)]
    mean_a, mean_b = (sum(x) / n, sum(y) / n) if n else (math.nan, math.nan)
    difference = sum(diffs) / n if n else math.nan
    if n < 2:
        return Paired(a, b, field, n, unpaired, mean_a, mean_b, difference, (-1.0, 1.0), 1.0, "paired t", None, None)
    sd = math.sqrt(sum((d - difference) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    p = 1.0 if sd == 0 else float(2 * stats.t.sf(abs(difference) / (sd / math.sqrt(n)), n - 1))
    if sd == 0 and difference != 0:
        p = 0.0
    return Paired(a, b, field, n, unpaired, mean_a, mean_b, difference,
                  (max(-1.0, difference - half), min(1.0, difference + half)), p, "paired t")


def cell_name(row: dict) -> str:
    eps = "" if row["eps"] >= 1 else f", eps {255 * row['eps']:.3g}/255"
    defense = "" if row["defense"] == "none" else f", +{row['defense']}"
    return f"{row['dataset']}/{row['model']} {row['setting']} {row['knowledge']}, {row['n_poisons']} poisons" + \
        eps + defense


def comparisons(rows: list[dict], others: list[dict] | None = None) -> list[tuple[str, Paired]]:
    """Per cell (rows with one pairing key), every attack against the control and against every other attack
    of the cell (`others` given: each row of `rows` against each row of `others` in its cell)."""
    found = []
    for key in dict.fromkeys(r["pairing_key"] for r in rows):
        here = [r for r in rows if r["pairing_key"] == key and r["attack"] != "none"]
        for r in here if others is None else ():
            if r.get("control_attack_success_rate") is not None:
                found.append((cell_name(r), compare_rows(r, r, r["scenario"], "control",
                                                         b_field="control_attack_success_rate")))
        pairs = [(r, s) for i, r in enumerate(here) for s in here[i + 1:]] if others is None else \
            [(r, s) for r in here for s in others if s["pairing_key"] == key and s["attack"] != "none"]
        for r, s in pairs:
            if measure_of(r) == measure_of(s):
                found.append((cell_name(r), compare_rows(r, s, r["scenario"], s["scenario"])))
    return found


def comparisons_markdown(found: list[tuple[str, Paired]]) -> str:
    """One table: per cell, A against B on their paired trials."""
    lines = ["| cell | A | B | paired trials | A | B | A only / B only | A − B [95% CI] | p | test |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for cell, p in found:
        discordant = "–" if p.a_only is None else f"{p.a_only} / {p.b_only}"
        unpaired = f" ({p.unpaired} unpaired)" if p.unpaired else ""
        lines.append(f"| {cell} | {p.a} | {p.b} | {p.trials}{unpaired} | {pct(p.a_rate)} | {pct(p.b_rate)} | "
                     f"{discordant} | {signed(p.difference)} [{signed(p.ci[0])}, {signed(p.ci[1])}] | "
                     f"{p.p_value:.3g} | {p.test} |")
    if not found:
        lines.append("| (no two attacks share a cell) | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:+.1f}"
