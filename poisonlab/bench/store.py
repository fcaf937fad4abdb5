"""Results in SQLite: one row per finished trial, written in one transaction when the trial ends. The store
carries the schema version of its rows; a store of another version, or a database that is not poisonlab's, is
refused before anything is written to it."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

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
        if not create and not self.path.is_file():
            raise DataError(f"{self.path.parent} holds no {self.FILENAME}; point at the --out folder of a run.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.check_version()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a poisonlab results database ({exc}); use a fresh --out folder.") \
                from None

    def check_version(self) -> None:
        """Create the tables in an empty database; otherwise read the schema version and refuse another one."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
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

    def trials(self, scenario_hash: str) -> list[TrialRow]:
        rows = self.conn.execute("SELECT trial, result FROM trials WHERE scenario_hash = ? ORDER BY trial",
                                 (scenario_hash,))
        return [self.read_row(scenario_hash, trial, text) for trial, text in rows]

    def read_row(self, scenario_hash: str, trial: int, text: str) -> TrialRow:
        try:
            return TrialRow.from_dict(json.loads(text))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise DataError(f"{self.path}: the stored row of trial {trial} of scenario {scenario_hash} is damaged "
                            f"({exc}); delete that row (or the file) and re-run to recompute it.") from None
