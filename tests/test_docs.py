"""The docs' attack and defense tables are the registries' (scripts/registry_tables.py writes them), every entry has
its page, and the command line's help names every registered attack, defense, model and data set."""

import importlib.util
import re
from pathlib import Path

from poisonlab.attacks import ATTACKS
from poisonlab.data import DATASETS
from poisonlab.defenses import DEFENSES
from poisonlab.models import MODELS
from tests.test_cli import poisonlab

REPO = Path(__file__).resolve().parents[1]


def registry_tables():
    spec = importlib.util.spec_from_file_location("registry_tables", REPO / "scripts" / "registry_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_and_docs_tables_are_written_from_the_registries():
    assert registry_tables().stale() == [], "run python scripts/registry_tables.py"


def test_every_attack_and_defense_has_its_page():
    for folder, registry in (("attacks", ATTACKS), ("defenses", DEFENSES)):
        missing = [name for name in registry if not (REPO / "docs" / folder / f"{name}.md").is_file()]
        assert not missing, f"docs/{folder}/ lacks pages for {missing}"


def test_the_run_help_names_every_registered_dataset_model_attack_and_defense(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no name folded across lines
    text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", poisonlab("run", "--help", check=True).stdout))
    for name in (*DATASETS, *MODELS, *ATTACKS, *DEFENSES):
        assert name in text, name


def test_the_benchmarks_page_lists_every_suite_and_no_placeholder_is_left():
    from poisonlab.bench.suites import suite_names

    text = (REPO / "docs" / "benchmarks.md").read_text()
    assert [n for n in suite_names() if f"| `{n}` |" not in text] == []
    pages = [REPO / "README.md", *(REPO / "docs").rglob("*.md")]
    assert [p.name for p in pages if re.search(r"^[A-Z][A-Z_]{7,}$", p.read_text(), re.M)] == []
