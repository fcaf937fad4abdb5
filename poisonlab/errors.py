"""Errors a user can act on: each message says what was given, what is expected and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class PoisonlabError(Exception):
    """Base class of every error poisonlab raises on purpose; the CLI prints it as one paragraph."""


class DataError(PoisonlabError):
    """A data file is missing, truncated, of the wrong format, or unsafe to read."""


class ConfigError(PoisonlabError, ValueError):
    """A configuration, threat model or parameter is invalid."""


def close_match(given: object, choices: Iterable[str]) -> str | None:
    """The valid name `given` most likely means: the only one it begins, else the closest by difflib's ratio, else
    the only one containing it; None when nothing is close."""
    choices = [str(c) for c in choices]
    text = str(given).lower()
    starting = [c for c in choices if len(text) >= 3 and c.startswith(text)]
    if len(starting) == 1:
        return starting[0]
    near = difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
    if near:
        return near[0]
    containing = [c for c in choices if len(text) >= 3 and text in c]
    return containing[0] if len(containing) == 1 else None


def did_you_mean(given: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a valid name is close to `given`, else ''."""
    match = close_match(given, choices)
    return f" (did you mean {match!r}?)" if match is not None else ""


def unknown(kind: str, given: object, choices: Iterable[str]) -> ConfigError:
    """The error for a name that is not one of `choices`: the name, a close match and every valid one."""
    choices = [str(c) for c in choices]
    return ConfigError(f"unknown {kind} {given!r}{did_you_mean(given, choices)}; choose one of: "
                       f"{', '.join(choices)}.")


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """A ConfigError unless `value` is one of `allowed` (named `name` in the message, with a close match)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, allowed))}"
                          f"{did_you_mean(value, map(str, allowed))}.")


def read_file(path: str | Path, what: str) -> bytes:
    """The bytes of `path`, or one ConfigError naming the file (`what` it should be) and why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}.") from None
