"""Summary rows rendered: the results table (with its targeted and defended parts), the attack × defense
matrix, the "Just How Toxic" layout; each written atomically into a run's folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.files import atomic_write_bytes
from ..defenses import DEFENSES
from ..metrics import pct


def table(columns: list[tuple[str, str]], cells: list[list[str]]) -> list[str]:
    """Markdown table lines: `columns` as (header, alignment rule), one row of cells per entry."""
    return ["| " + " | ".join(h for h, _ in columns) + " |", "| " + " | ".join(a for _, a in columns) + " |",
            *("| " + " | ".join(row) + " |" for row in cells)]


def main_cells(r: dict) -> list[str]:
    return [r["scenario"], str(r["n_poisons"]), str(r["trials"]), pct(r["clean_accuracy"], r["clean_accuracy_ci"]),
            pct(r["attack_success_rate"], r["attack_success_ci"]), pct(r["test_error"], r["test_error_ci"]),
            pct(r["control_test_error"]), f"{r['seconds_per_trial']:.1f}"]


def targeted_cells(r: dict) -> list[str]:
    return [r["scenario"], r["setting"], r["knowledge"], f"{255 * r['eps']:.3g}/255",
            f"{r['attack_successes']}/{r['attack_inputs']} = {pct(r['attack_success_rate'], r['attack_success_ci'])}",
            f"{r['control_attack_successes']}/{r['attack_inputs']}",
            f"{r['relative_feature_loss']:.3f} ({r['noise_feature_loss']:.3f})", f"{r['craft_seconds_per_trial']:.2f}",
            f"{r['train_seconds_per_trial']:.2f}"]


def defended_cells(r: dict) -> list[str]:
    return [r["scenario"], pct(r["undefended_attack_success_rate"]), pct(r["attack_success_rate"]),
            pct(r["undefended_clean_accuracy"]), pct(r["clean_accuracy"]), defense_outcome(r)]


L, R = "---", "---:"
MAIN = [("scenario", L), ("poisons", R), ("trials", R), ("clean accuracy [95% CI]", L),
        ("attack success [95% CI]", L), ("test error [95% CI]", L), ("control error", R), ("s/trial", R)]
TARGETED = [("scenario", L), ("setting", L), ("knowledge", L), ("eps", R), ("success [95% CI]", L), ("control", L),
            ("feature loss (±eps noise)", R), ("craft s/trial", R), ("train s/trial", R)]
DEFENDED = [("scenario", L), ("undefended attack success", R), ("defended attack success", R),
            ("undefended clean accuracy", R), ("defended clean accuracy", R), ("what the defense saw", L)]


def markdown(rows: list[dict], title: str | None = None) -> str:
    """The results table (clean accuracy, attack success and test error with 95% CI, the control's test error),
    then the targeted rows' and the defended rows' own tables."""
    lines = ([f"## {title}", ""] if title else []) + table(MAIN, [main_cells(r) for r in rows])
    for columns, cells, keep in ((TARGETED, targeted_cells, lambda r: r["targeted"]),
                                 (DEFENDED, defended_cells, lambda r: r["defense"] != "none")):
        chosen = [r for r in rows if keep(r)]
        if chosen:
            lines += ["", *table(columns, [cells(r) for r in chosen])]
    warnings = [f"- warning: {w}" for r in rows for w in r.get("warnings", ())]
    return "\n".join(lines + ([""] + warnings if warnings else [])) + "\n"


def defense_outcome(r: dict) -> str:
    """One cell saying what the defense saw, as its kind of counts describes it."""
    return DEFENSES[r["defense"]].Counts.describe(r)


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
    then, per attack and defense, what the defense saw (its counts' own description)."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        cells = {(attack_key(r), r["defense"]): r for r in rows if r["dataset"] == dataset}
        attacks = list(dict.fromkeys(a for a, _ in cells))
        defenses = list(dict.fromkeys(d for _, d in cells))
        lines += [f"### {dataset}: attack success [95% CI] / clean accuracy", "",
                  "| attack | " + " | ".join(defenses) + " |", "| --- |" + " --- |" * len(defenses)]
        for a in attacks:
            row = [matrix_cell(cells.get((a, d))) for d in defenses]
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        defended = [d for d in defenses if d != "none"]
        if defended:
            lines += ["", f"### {dataset}: what each defense saw", "", "| attack | defense | what it saw |",
                      "| --- | --- | --- |"]
            lines += [f"| {a} | {d} | {defense_outcome(cells[a, d])} |" for a in attacks for d in defended
                      if (a, d) in cells]
        lines.append("")
    return "\n".join(lines)


def matrix_cell(r: dict | None) -> str:
    if r is None:
        return "–"
    success = pct(r["attack_success_rate"], r["attack_success_ci"]) if r["attack_success_rate"] is not None else "–"
    return f"{success} / {pct(r['clean_accuracy'])}"


KNOWLEDGE_COLUMNS = ("white-box", "grey-box", "black-box")


def toxic_markdown(rows: list[dict]) -> str:
    """The "Just How Toxic" layout: per setting, attacks × knowledge, success (k/n) with the control row; a
    knowledge level with several victims (JHT's black-box MobileNetV2 and VGG11) gets a column for each."""
    rows = [r for r in rows if r["targeted"]]
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        here = {(r["attack"], (r["knowledge"], r["model"])): r for r in rows if r["setting"] == setting}
        columns = [c for k in KNOWLEDGE_COLUMNS for c in dict.fromkeys(c for _, c in here) if c[0] == k]
        shared = {k for k, _ in columns if sum(c[0] == k for c in columns) > 1}
        labels = [f"{k} ({m})" if k in shared else k for k, m in columns]
        lines += [f"### {setting}: attack success (successes/trials) [95% CI]", "",
                  "| attack | eps | poisons | " + " | ".join(labels) + " |",
                  "| --- | ---: | ---: |" + " --- |" * len(columns)]
        for attack in dict.fromkeys(a for a, _ in here):
            first = next(r for (a, _), r in here.items() if a == attack)
            cells = [toxic_cell(here.get((attack, c)), "attack_success", "attack_successes") for c in columns]
            lines.append(f"| {attack} | {255 * first['eps']:.3g}/255 | {first['n_poisons']} | " + " | ".join(cells)
                         + " |")
        lines += control_lines(here, columns)
    return "\n".join(lines)


def control_lines(here: dict, columns: list) -> list[str]:
    """The control row (the clean victim on the target), and one more for each attack whose control differs in
    some column (a triggered attack's: the clean victim on the target with the trigger)."""
    def cell(r: dict | None) -> str:
        return toxic_cell(r, "control_attack_success", "control_attack_successes")
    plain = [cell(next((r for (_, kn), r in here.items() if kn == c), None)) for c in columns]
    lines = ["| control (un-optimised bases) | | | " + " | ".join(plain) + " |"]
    for attack in dict.fromkeys(a for a, _ in here):
        own = [cell(here.get((attack, c))) for c in columns]
        if any(o not in ("–", p) for o, p in zip(own, plain, strict=True)):
            lines.append(f"| control for {attack} (the target with its trigger) | | | " + " | ".join(own) + " |")
    return lines + [""]


def toxic_cell(r: dict | None, rate: str, count: str) -> str:
    if r is None:
        return "–"
    return f"{pct(r[f'{rate}_rate'])} ({r[count]}/{r['trials']}) [{pct(r[f'{rate}_ci'][0])}, {pct(r[f'{rate}_ci'][1])}]"


def write_toxic(out_dir: str | Path, rows: list[dict], title: str) -> Path:
    path = Path(out_dir) / "toxic.md"
    atomic_write_bytes(path, f"## {title}\n\n{toxic_markdown(rows)}".encode())
    return path


def write_comparisons(out_dir: str | Path, rows: list[dict], title: str) -> Path:
    """Write comparisons.md: per cell, every attack against its control and against each other attack on the
    same trials (`compare.comparisons`)."""
    from .compare import comparisons, comparisons_markdown

    path = Path(out_dir) / "comparisons.md"
    text = f"## {title}: paired comparisons on the same trials\n\n{comparisons_markdown(comparisons(rows))}"
    atomic_write_bytes(path, text.encode())
    return path
