"""Building a registered class (an attack, a defense) by name with checked hyper-parameters."""

from __future__ import annotations

import dataclasses

from .errors import ConfigError


def build(kind: str, registry: dict[str, type], name: str, params: dict, extra_names: tuple[str, ...] = ()):
    """`registry[name](**params)`; an unknown name or parameter is a ConfigError listing the valid ones."""
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join((*extra_names, *registry))}.")
    cls = registry[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"{kind} {name!r} has no parameter {', '.join(unknown)}; its parameters are: "
                          f"{', '.join(fields) or '(none)'}.")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}.") from None
