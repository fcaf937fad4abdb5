"""Aggregates stored trials into one row per scenario, as a Markdown table or JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..data.files import atomic_write_bytes
from ..metrics import Rate
from .scenario import Scenario
from .store import Store


def summarize(store: Store, scenarios: list[Scenario] | None = None) -> list[dict]:
    """One row per scenario: rates pooled over its trials' test points, each with a Wilson 95% interval."""
    rows = []
    for scenario in scenarios if scenarios is not None else store.scenarios():
        trials = store.trials(scenario.hash)
        if trials:
            rows.append(summary_row(scenario, trials))
    return rows


def summary_row(scenario: Scenario, trials: list[dict]) -> dict:
    accuracy = Rate(sum(t["correct"] for t in trials), sum(t["n_test"] for t in trials))
    error = Rate(accuracy.trials - accuracy.successes, accuracy.trials)
    clean_error = Rate(accuracy.trials - sum(t["clean_victim_correct"] for t in trials), accuracy.trials)
    has_asr = all(t["asr_eligible"] is not None for t in trials)
    success = Rate(sum(t["asr_hits"] for t in trials), sum(t["asr_eligible"] for t in trials)) if has_asr else None
    clean_hits = [t.get("clean_victim_asr_hits") for t in trials]
    clean_success = sum(clean_hits) / success.trials if success and success.trials and None not in clean_hits \
        else None
    others = Rate(sum(t.get("others_correct", t["correct"]) for t in trials),
                  sum(t.get("n_others", t["n_test"]) for t in trials))
    clean_others = sum(t.get("clean_victim_others_correct", t["clean_victim_correct"]) for t in trials)
    return {
        "scenario": scenario.label, "dataset": scenario.dataset, "model": scenario.model,
        "attack": scenario.attack, "budget": scenario.budget, "n_poisons": trials[0]["n_poisons"],
        "trials": len(trials),
        "clean_accuracy": accuracy.value, "clean_accuracy_ci": list(accuracy.ci),
        "attack_success_rate": success.value if success else None,
        "attack_success_ci": list(success.ci) if success else None,
        "clean_attack_success_rate": clean_success,  # the same measure on the victim trained on clean data
        "test_error": error.value, "test_error_ci": list(error.ci),
        "clean_test_error": clean_error.value, "clean_test_error_ci": list(clean_error.ci),
        # accuracy on the test classes a class-targeted attack should leave alone (all classes otherwise)
        "other_classes_accuracy": others.value, "other_classes_accuracy_ci": list(others.ci),
        "clean_other_classes_accuracy": clean_others / others.trials if others.trials else None,
        "seconds_per_trial": sum(t["seconds"] for t in trials) / len(trials),
        "craft_seconds_per_trial": sum(t["craft_seconds"] for t in trials) / len(trials),
        "train_seconds_per_trial": sum(t["train_seconds"] for t in trials) / len(trials),
        "scenario_hash": scenario.hash,
        **(defense_fields(scenario, trials, success) if scenario.defense != "none" else {}),
        **(targeted_fields(scenario, trials) if "adversarial_class" in trials[0] else {}),
    }


def mean_of(trials: list[dict], key: str) -> float | None:
    """The mean of a field over the trials that have it (None when none do: trials stored before it existed)."""
    values = [t[key] for t in trials if t.get(key) is not None]
    return sum(values) / len(values) if values else None


def targeted_fields(scenario: Scenario, trials: list[dict]) -> dict:
    """A targeted attack's row: success is over trials (one target each); the control is the same victim trained
    on the clean set (the poisons' un-optimised bases); the feature losses compare the poisons with random ±eps
    noise on the bases (bullseye's relative loss on the victim's pretrained network)."""
    control = Rate(sum(t["clean_victim_asr_hits"] for t in trials), len(trials))
    return {"setting": scenario.setting, "knowledge": scenario.knowledge, "eps": scenario.eps,
            "control_success_rate": control.value, "control_success_ci": list(control.ci),
            "successes": sum(t["asr_hits"] for t in trials), "control_successes": control.successes,
            "relative_feature_loss": mean_of(trials, "relative_feature_loss"),
            "noise_feature_loss": mean_of(trials, "noise_feature_loss"),
            "target_adversarial_loss": mean_of(trials, "target_adversarial_loss"),
            "control_adversarial_loss": mean_of(trials, "control_adversarial_loss"),
            "max_perturbation": max(t["max_perturbation"] for t in trials),
            "setups": scenario.setups, "setups_skipped": trials[0]["setups_skipped"],
            "bases_topped_up": sum(t["bases_topped_up"] for t in trials)}


def defense_fields(scenario: Scenario, trials: list[dict], success: Rate | None) -> dict:
    """With a defense in the loop the row's accuracy and success are the defended victim's; these add the
    undefended victim's, the detector's precision / recall / AUROC (pooled over trials), and DPA's certified
    accuracy per radius (averaged over trials)."""
    n_test = sum(t["n_test"] for t in trials)
    fields = {"defense": scenario.defense, "defense_params": scenario.defense_params,
              "undefended_clean_accuracy": sum(t["undefended_correct"] for t in trials) / n_test,
              "undefended_attack_success_rate": sum(t["undefended_asr_hits"] for t in trials) / success.trials
              if success and success.trials else None,
              "defense_seconds_per_trial": sum(t["defense_seconds"] for t in trials) / len(trials)}
    if "n_removed" in trials[0]:
        removed = sum(t["n_removed"] for t in trials)
        caught = sum(t["removed_poisons"] for t in trials)
        present = sum(t["n_poisons_present"] for t in trials)
        aurocs = [t["detection_auroc"] for t in trials if t["detection_auroc"] is not None]
        recall = Rate(caught, present)
        fields |= {"detection_precision": caught / removed if removed else None,
                   "detection_recall": recall.value if present else None,
                   "detection_recall_ci": list(recall.ci) if present else None,
                   "detection_auroc": sum(aurocs) / len(aurocs) if aurocs else None,
                   "removed_fraction": removed / sum(t["n_scored"] for t in trials)}
    if "flagged_classes" in trials[0]:
        target = scenario.target_class
        fields |= {"target_flagged_rate": sum(target in t["flagged_classes"] for t in trials) / len(trials)
                   if target is not None else None,
                   "clean_victim_false_flag_rate": sum(bool(t["clean_victim_flagged_classes"]) for t in trials)
                   / len(trials),
                   "flagged_classes": [t["flagged_classes"] for t in trials]}
    if "rejected_clean" in trials[0]:
        fields["rejection_clean"] = sum(t["rejected_clean"] for t in trials) / n_test
        if success and success.trials and "rejected_triggered" in trials[0]:
            fields["rejection_triggered"] = sum(t["rejected_triggered"] for t in trials) / success.trials
    if "dp_epsilon" in trials[0]:
        fields |= {"dp_epsilon": trials[0]["dp_epsilon"], "dp_delta": trials[0]["dp_delta"]}
    if "certified_accuracy" in trials[0]:
        curves = [t["certified_accuracy"] for t in trials]
        fields["certified_accuracy"] = [sum(c[r] for c in curves) / len(curves) for r in range(len(curves[0]))]
    return fields


def pct(value: float | None, ci: list[float] | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{100 * value:.1f}%"
    return f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else text


def markdown(rows: list[dict], title: str | None = None) -> str:
    """A Markdown table: scenario, poisons, trials, clean accuracy, attack success and test error with 95% CI,
    and the test error of the same victim trained on the clean data."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| scenario | poisons | trials | clean accuracy [95% CI] | attack success [95% CI] | "
              "test error [95% CI] | clean-trained error | s/trial |",
              "| --- | ---: | ---: | --- | --- | --- | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['n_poisons']} | {r['trials']} | "
                     f"{pct(r['clean_accuracy'], r['clean_accuracy_ci'])} | "
                     f"{pct(r['attack_success_rate'], r['attack_success_ci'])} | "
                     f"{pct(r['test_error'], r['test_error_ci'])} | {pct(r['clean_test_error'])} | "
                     f"{r['seconds_per_trial']:.1f} |")
    targeted = [r for r in rows if "control_success_rate" in r]
    if targeted:
        lines += ["", "| scenario | setting | knowledge | eps | success [95% CI] | control | feature loss (±eps noise) "
                  "| craft s/trial | train s/trial |", "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: |"]
        for r in targeted:
            lines.append(f"| {r['scenario']} | {r['setting']} | {r['knowledge']} | {255 * r['eps']:.3g}/255 | "
                         f"{r['successes']}/{r['trials']} = {pct(r['attack_success_rate'], r['attack_success_ci'])} | "
                         f"{r['control_successes']}/{r['trials']} | {r['relative_feature_loss']:.3f} "
                         f"({r['noise_feature_loss']:.3f}) | {r['craft_seconds_per_trial']:.2f} | "
                         f"{r['train_seconds_per_trial']:.2f} |")
    defended = [r for r in rows if r.get("defense")]
    if defended:
        lines += ["", "| scenario | undefended attack success | defended attack success | undefended clean accuracy | "
                  "defended clean accuracy | what the defense saw |", "| --- | ---: | ---: | ---: | ---: | --- |"]
        for r in defended:
            lines.append(f"| {r['scenario']} | {pct(r['undefended_attack_success_rate'])} | "
                         f"{pct(r['attack_success_rate'])} | {pct(r['undefended_clean_accuracy'])} | "
                         f"{pct(r['clean_accuracy'])} | {defense_outcome(r)} |")
    return "\n".join(lines) + "\n"


def defense_outcome(r: dict) -> str:
    """One cell: detection recall / precision / AUROC, flagged classes, rejections, or certified accuracy."""
    if r.get("detection_recall") is not None or "detection_auroc" in r:
        auroc = f"{r['detection_auroc']:.3f}" if r.get("detection_auroc") is not None else "–"
        return (f"recall {pct(r.get('detection_recall'))}, precision {pct(r.get('detection_precision'))}, "
                f"AUROC {auroc}, removed {pct(r['removed_fraction'])}")
    if "flagged_classes" in r:
        return (f"target flagged in {pct(r['target_flagged_rate'])} of trials; clean victim flagged in "
                f"{pct(r['clean_victim_false_flag_rate'])}")
    if "rejection_clean" in r:
        return (f"rejects {pct(r.get('rejection_triggered'))} of triggered, {pct(r['rejection_clean'])} of clean "
                "test inputs")
    if "dp_epsilon" in r:
        return f"(ε = {r['dp_epsilon']:.2g}, δ = {r['dp_delta']:.1g})"
    if r.get("certified_accuracy"):
        return "certified accuracy at radius 0, 1, …: " + ", ".join(pct(v) for v in r["certified_accuracy"])
    return "–"


def write_report(out_dir: str | Path, rows: list[dict], title: str | None = None) -> str:
    """Write report.md and report.json into `out_dir` (atomically) and return the Markdown."""
    text = markdown(rows, title)
    atomic_write_bytes(Path(out_dir) / "report.md", text.encode())
    atomic_write_bytes(Path(out_dir) / "report.json", json.dumps(rows, indent=1).encode())
    return text


def write_matrix(out_dir: str | Path, rows: list[dict], title: str) -> Path:
    """Write matrix.md (attack × defense tables) into `out_dir` atomically and return its path."""
    path = Path(out_dir) / "matrix.md"
    atomic_write_bytes(path, f"## {title}\n\n{matrix_markdown(rows)}".encode())
    return path


def attack_key(r: dict) -> str:
    budget = r["budget"]
    return r["attack"] if r["attack"] == "none" else f"{r['attack']} @ {budget:g}"


def matrix_markdown(rows: list[dict]) -> str:
    """Per data set, attacks × defenses: attack success [95% CI] and clean accuracy of the (defended) victim;
    then the detectors' AUROC and recall at their removal fraction."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        cells = {(attack_key(r), r.get("defense", "none")): r for r in rows if r["dataset"] == dataset}
        attacks = list(dict.fromkeys(a for a, _ in cells))
        defenses = list(dict.fromkeys(d for _, d in cells))
        lines += [f"### {dataset}: attack success [95% CI] / clean accuracy", "",
                  "| attack | " + " | ".join(defenses) + " |", "| --- |" + " --- |" * len(defenses)]
        for a in attacks:
            row = [matrix_cell(cells.get((a, d))) for d in defenses]
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        detectors = [d for d in defenses if any(c.get("detection_auroc") is not None for (_, dd), c in cells.items()
                                                if dd == d)]
        if detectors:
            lines += ["", f"### {dataset}: detection AUROC / recall at the removal fraction", "",
                      "| attack | " + " | ".join(detectors) + " |", "| --- |" + " --- |" * len(detectors)]
            for a in attacks:
                row = [detection_cell(cells.get((a, d))) for d in detectors]
                lines.append(f"| {a} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def matrix_cell(r: dict | None) -> str:
    if r is None:
        return "–"
    success = pct(r["attack_success_rate"], r["attack_success_ci"]) if r["attack_success_rate"] is not None else "–"
    return f"{success} / {pct(r['clean_accuracy'])}"


def detection_cell(r: dict | None) -> str:
    if r is None or r.get("detection_auroc") is None:
        return "–"
    return f"{r['detection_auroc']:.3f} / {pct(r['detection_recall'])}"


KNOWLEDGE_COLUMNS = ("white-box", "grey-box", "black-box")


def toxic_markdown(rows: list[dict]) -> str:
    """The "Just How Toxic" layout: per setting, attacks × knowledge, success (k/n) with the control row."""
    rows = [r for r in rows if "control_success_rate" in r]
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        here = {(r["attack"], r["knowledge"]): r for r in rows if r["setting"] == setting}
        columns = [k for k in KNOWLEDGE_COLUMNS if any(kn == k for _, kn in here)]
        lines += [f"### {setting}: attack success (successes/trials) [95% CI]", "",
                  "| attack | eps | poisons | " + " | ".join(columns) + " |",
                  "| --- | ---: | ---: |" + " --- |" * len(columns)]
        for attack in dict.fromkeys(a for a, _ in here):
            first = next(r for (a, _), r in here.items() if a == attack)
            cells = [toxic_cell(here.get((attack, k)), "attack_success", "successes") for k in columns]
            lines.append(f"| {attack} | {255 * first['eps']:.3g}/255 | {first['n_poisons']} | " + " | ".join(cells)
                         + " |")
        controls = [toxic_cell(next((r for (_, kn), r in here.items() if kn == k), None), "control_success",
                               "control_successes") for k in columns]
        lines += ["| control (un-optimised bases) | | | " + " | ".join(controls) + " |", ""]
    return "\n".join(lines)


def toxic_cell(r: dict | None, rate: str, count: str) -> str:
    if r is None:
        return "–"
    return f"{pct(r[f'{rate}_rate'])} ({r[count]}/{r['trials']}) [{pct(r[f'{rate}_ci'][0])}, {pct(r[f'{rate}_ci'][1])}]"


def write_toxic(out_dir: str | Path, rows: list[dict], title: str) -> Path:
    path = Path(out_dir) / "toxic.md"
    atomic_write_bytes(path, f"## {title}\n\n{toxic_markdown(rows)}".encode())
    return path
