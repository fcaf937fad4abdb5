"""Defenses by name: one explicit registry (detectors: fit/score; robust training procedures)."""

from __future__ import annotations

DEFENSES: dict[str, type] = {}

__all__ = ["DEFENSES"]
