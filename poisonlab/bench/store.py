"""Results in SQLite: one row per finished trial, written in one transaction when the trial ends. The store
carries the schema version of its rows; a store of another version, or a database that is not poisonlab's, is
refused before anything is written to it."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from pydantic import ValidationError

from ..errors import DataError
from .rows import SCHEMA_VERSION, TrialRow
from .scenario import Scenario, scenario_from_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS poisonlab (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scenarios (hash TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL,
                                      position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trials (scenario_hash TEXT NOT NULL REFERENCES scenarios(hash), trial INTEGER NOT NULL,
                                   result TEXT NOT NULL, finished_at REAL NOT NULL,
                                   PRIMARY KEY (scenario_hash, trial));
"""


class Store:
    """`results.sqlite` in a run's output folder; a trial is either wholly there or not there at all."""

    FILENAME = "results.sqlite"

    def __init__(self, out_dir: str | Path, create: bool = True):
        self.path = Path(out_dir) / self.FILENAME
        self.damaged: list[str] = []  # what `trials` found unreadable (each left out of the summary)
        if not create and not self.path.is_file():
            raise DataError(f"{self.path.parent} holds no {self.FILENAME}; point at the --out folder of a run.")
        if self.path.exists() and not self.path.is_file():
            raise DataError(f"{self.path} is not a file; use a fresh --out folder.")
        # only a database this store creates (absent or empty) gets poisonlab's tables
        fresh = create and (not self.path.exists() or self.path.stat().st_size == 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.check_version(fresh)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a poisonlab results database ({exc}); use a fresh --out folder.") \
                from None

    def check_version(self, fresh: bool) -> None:
        """Create the tables in a database this store just created; otherwise read the schema version and refuse
        another one (or a database that is not poisonlab's, untouched)."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and not fresh:
            self.conn.close()
            raise DataError(f"{self.path} is not a poisonlab results database (it holds no poisonlab tables); it was "
                            "left untouched; use a fresh --out folder.")
        if not tables:
            with self.conn:
                self.conn.executescript(SCHEMA)
                self.conn.execute("INSERT INTO poisonlab VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        if "poisonlab" not in tables:
            version = "1 (before versioning)" if {"scenarios", "trials"} <= tables else None
            self.conn.close()
            if version is None:
                raise DataError(f"{self.path} is not a poisonlab results database (its tables are "
                                f"{', '.join(sorted(tables))}); it was left untouched; use a fresh --out folder.")
            self.refuse(version)
        row = self.conn.execute("SELECT value FROM poisonlab WHERE key = 'schema_version'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            self.conn.close()
            self.refuse(row[0] if row else "unknown")

    def refuse(self, version: str) -> None:
        raise DataError(f"{self.path} holds results of schema version {version}; this poisonlab reads schema "
                        f"version {SCHEMA_VERSION}. Re-run into a fresh --out folder (or report it with the "
                        "poisonlab that wrote it).")

    def close(self) -> None:
        self.conn.close()

    def add_scenario(self, scenario: Scenario) -> None:
        with self.conn:
            position = self.conn.execute("SELECT COUNT(*) FROM scenarios").fetchone()[0]
            self.conn.execute("INSERT OR IGNORE INTO scenarios VALUES (?, ?, ?, ?)",
                              (scenario.hash, scenario.label, scenario.model_dump_json(), position))

    def done(self, scenario_hash: str) -> set[int]:
        rows = self.conn.execute("SELECT trial FROM trials WHERE scenario_hash = ?", (scenario_hash,))
        return {r[0] for r in rows}

    def add_trial(self, scenario_hash: str, row: TrialRow) -> None:
        """Record a finished trial; a trial already recorded is kept as it was (never duplicated)."""
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO trials VALUES (?, ?, ?, ?)",
                              (scenario_hash, row.trial, json.dumps(row.to_dict(), sort_keys=True), time.time()))

    def scenarios(self) -> list[Scenario]:
        rows = self.conn.execute("SELECT config FROM scenarios ORDER BY position").fetchall()
        return [scenario_from_dict(json.loads(r[0]), str(self.path)) for r in rows]

    def trials(self, scenario: Scenario) -> list[TrialRow]:
        """The scenario's readable trials; a damaged row is left out and described in `damaged`."""
        rows = self.conn.execute("SELECT trial, result FROM trials WHERE scenario_hash = ? ORDER BY trial",
                                 (scenario.hash,))
        readable = []
        for trial, text in rows:
            try:
                readable.append(TrialRow.from_json(text))
            except ValueError as exc:
                self.damaged.append(f"{self.path}: trial {trial} of {scenario.label} (scenario {scenario.hash}) is "
                                    f"damaged ({one_line(exc)}) and left out; delete the file's row or re-run into a "
                                    "fresh --out folder to recompute it.")
        return readable


def one_line(exc: ValueError) -> str:
    """A validation error as `field: problem; ...` (without pydantic's links), else the error's text."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors()[:3])
    return " ".join(str(exc).split())
