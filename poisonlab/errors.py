"""Errors a user can act on: each message says what was given, what is expected and how to fix it."""


class PoisonlabError(Exception):
    """Base class of every error poisonlab raises on purpose; the CLI prints it as one paragraph."""


class DataError(PoisonlabError):
    """A data file is missing, truncated, of the wrong format, or unsafe to read."""


class ConfigError(PoisonlabError, ValueError):
    """A configuration, threat model or parameter is invalid."""
