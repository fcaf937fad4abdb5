"""Seeded numbers that must not move: trial rows recorded by the code before the one-trial pipeline (the quick
suite's digits cells, the bilevel suite's digits cells, BadNets against every defense, the toxic suite's frozen
white-box bullseye cell), re-run by today's code.

On the CPU they were recorded on (tests/pinned/rows_before_refactor.json names it) every count must be equal.
Trained networks round differently on another CPU (vector width, kernels), so there the counts must agree within
a tolerance and only what does not depend on training is compared exactly (seeds, sizes, poison counts)."""

import json
from pathlib import Path

import pytest

from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.bench.trial import run_trials

PINS = json.loads((Path(__file__).parent / "pinned" / "rows_before_refactor.json").read_text())
EXACT = ("seed", "n_train", "n_test", "n_poisons", "n_others", "attack_inputs")
TRAINED = ("correct", "control_correct", "attack_hits", "control_attack_hits", "others_correct",
           "control_others_correct")
# The code before the refactor did not count the untouched test images of a targeted trial; its rows hold None.
NEW_IN_TARGETED_ROWS = ("n_others", "others_correct", "control_others_correct")


def cpu() -> str:
    """The CPU as the pins name it: its model name and whether it has AVX-512."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{model}, {'AVX-512' if ' avx512f' in info else 'no AVX-512'}"


SAME_CPU = cpu() == PINS["meta"]["cpu"]


def label(entry) -> str:
    return entry["scenario"]["name"]


def recorded(pinned: dict, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys the old code recorded for this row."""
    return tuple(k for k in keys if not ("targeted" in pinned and k in NEW_IN_TARGETED_ROWS))


def check_pinned(entry: dict, cache: str, **extra) -> None:
    scenario = scenario_from_dict({**entry["scenario"], **extra})
    trials = sorted(int(t) for t in entry["trials"])
    for row in run_trials(scenario, trials, cache):
        pinned, got = entry["trials"][str(row.trial)], row.to_dict()
        for key in recorded(pinned, EXACT):
            assert got[key] == pinned[key], (label(entry), row.trial, key)
        if "targeted" in pinned:  # the untouched test images of a targeted trial: every test image
            assert got["n_others"] == got["n_test"], label(entry)
        if SAME_CPU:
            for key in recorded(pinned, TRAINED):
                assert got[key] == pinned[key], (label(entry), row.trial, key)
            compare_parts(entry, row, pinned)
        else:
            for key, n in (("correct", "n_test"), ("control_correct", "n_test"), ("attack_hits", "attack_inputs")):
                if pinned[key] is not None:
                    assert abs(got[key] - pinned[key]) <= max(3, 0.03 * pinned[n]), (label(entry), key)


def compare_parts(entry, row, pinned) -> None:
    if pinned.get("targeted"):
        part = row.targeted
        for key in ("target_image_index", "target_image_class", "target_class"):
            assert getattr(part, key) == pinned["targeted"][key], (label(entry), row.trial, key)
        assert part.relative_feature_loss == pytest.approx(pinned["targeted"]["relative_feature_loss"], rel=1e-5)
    if pinned.get("defense"):
        defense = pinned["defense"]
        assert (row.defense.undefended_correct, row.defense.undefended_attack_hits) == \
            (defense["undefended_correct"], defense["undefended_attack_hits"]), label(entry)
        for key, value in defense["counts"].items():
            assert row.defense.counts[key] == pytest.approx(value, rel=1e-9), (label(entry), key)


@pytest.mark.parametrize("entry", PINS["fast"], ids=label)
def test_seeded_rows_of_the_quick_bilevel_and_defended_cells_do_not_move(entry, tmp_path_factory):
    check_pinned(entry, str(tmp_path_factory.getbasetemp() / "pinned-models"))


@pytest.mark.slow
@pytest.mark.parametrize("entry", PINS["slow"], ids=label)
def test_seeded_rows_of_every_defense_and_the_frozen_bullseye_cell_do_not_move(entry, tmp_path_factory,
                                                                                cifar_subset_path):
    extra = {"data_root": str(cifar_subset_path)} if entry["scenario"]["dataset"] == "cifar10" else {}
    check_pinned(entry, str(tmp_path_factory.getbasetemp() / "pinned-models"), **extra)

