"""Results in SQLite: one row per finished trial, written in one transaction when the trial ends."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ..errors import DataError
from .scenario import Scenario, scenario_from_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS scenarios (hash TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL,
                                      position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trials (scenario_hash TEXT NOT NULL REFERENCES scenarios(hash), trial INTEGER NOT NULL,
                                   result TEXT NOT NULL, finished_at REAL NOT NULL,
                                   PRIMARY KEY (scenario_hash, trial));
"""


class Store:
    """`results.sqlite` in a run's output folder; a trial is either wholly there or not there at all."""

    FILENAME = "results.sqlite"

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
            with self.conn:
                self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a poisonlab results database ({exc}); use a fresh --out folder.") \
                from None

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

    def add_trial(self, scenario_hash: str, trial: int, result: dict) -> None:
        """Record a finished trial; a trial already recorded is kept as it was (never duplicated)."""
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO trials VALUES (?, ?, ?, ?)",
                              (scenario_hash, trial, json.dumps(result, sort_keys=True), time.time()))

    def scenarios(self) -> list[Scenario]:
        rows = self.conn.execute("SELECT config FROM scenarios ORDER BY position").fetchall()
        return [scenario_from_dict(json.loads(r[0]), str(self.path)) for r in rows]

    def trials(self, scenario_hash: str) -> list[dict]:
        rows = self.conn.execute("SELECT trial, result FROM trials WHERE scenario_hash = ? ORDER BY trial",
                                 (scenario_hash,))
        return [{"trial": t, **json.loads(r)} for t, r in rows]
