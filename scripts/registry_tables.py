"""The attack and defense tables of README.md and docs/, written from the registries.

    python scripts/registry_tables.py          # rewrite the tables between their markers
    python scripts/registry_tables.py --check  # exit 1 (naming the file) if a table is out of date

A table lies between `<!-- registry:NAME -->` and `<!-- /registry:NAME -->`; tests/test_docs.py runs the check,
so a new attack or defense appears in the docs by its module and its registry line."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from poisonlab.attacks import ATTACKS
from poisonlab.defenses import DEFENSES

ROOT = Path(__file__).resolve().parents[1]


def attack_declarations(cls) -> str:
    attack = cls()
    reads = ", ".join(f"`{f}`" for f in sorted(attack.threat_fields())) or "–"
    kind = "targeted" if cls.targeted else ("clean-label" if not cls.changes_labels else "dirty-label")
    return f"{kind}; crafts on {cls.needs}; reads {reads}" if cls.name != "none" else "the clean baseline"


def attacks_table(link: str) -> str:
    rows = [f"| [`{name}`]({link}{name}.md) | {cls.summary} | {attack_declarations(cls)} |"
            for name, cls in ATTACKS.items()]
    return "\n".join(["| attack | what it does | declares |", "| --- | --- | --- |", *rows])


def defenses_table(link: str) -> str:
    rows = []
    for name, cls in DEFENSES.items():
        counts = ", ".join(f"`{f.name}`" for f in dataclasses.fields(cls.Counts)) or "–"
        rows.append(f"| [`{name}`]({link}{name}.md) | {cls.summary} | {counts} | {', '.join(cls.settings)} |")
    return "\n".join(["| defense | what it does | counts in each row | settings |", "| --- | --- | --- | --- |",
                      *rows])


TABLES = {
    ("README.md", "attacks"): lambda: attacks_table("docs/attacks/"),
    ("README.md", "defenses"): lambda: defenses_table("docs/defenses/"),
    ("docs/attacks/README.md", "attacks"): lambda: attacks_table(""),
    ("docs/defenses/README.md", "defenses"): lambda: defenses_table(""),
}


def render(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- registry:{name} -->\n).*?(<!-- /registry:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- registry:{name} --> ... <!-- /registry:{name} --> markers in the file")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def stale() -> list[str]:
    """The files whose tables differ from the registries (rewritten unless checking)."""
    out = []
    for (file, name), table in TABLES.items():
        path = ROOT / file
        text = path.read_text()
        if render(text, name, table()) != text:
            out.append(f"{file} ({name})")
    return out


def main(check: bool) -> int:
    if check:
        wrong = stale()
        for item in wrong:
            print(f"out of date: {item}; run python scripts/registry_tables.py", file=sys.stderr)
        return 1 if wrong else 0
    for (file, name), table in TABLES.items():
        path = ROOT / file
        path.write_text(render(path.read_text(), name, table()))
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
