"""Errors a user can act on: each message says what was given, what is expected and how to fix it."""

from pathlib import Path


class PoisonlabError(Exception):
    """Base class of every error poisonlab raises on purpose; the CLI prints it as one paragraph."""


class DataError(PoisonlabError):
    """A data file is missing, truncated, of the wrong format, or unsafe to read."""


class ConfigError(PoisonlabError, ValueError):
    """A configuration, threat model or parameter is invalid."""


def read_file(path: str | Path, what: str) -> bytes:
    """The bytes of `path`, or one ConfigError naming the file (`what` it should be) and why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}.") from None
