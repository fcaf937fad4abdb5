"""Building a registered class (an attack, a defense) by name with checked, typed hyper-parameters."""

from __future__ import annotations

import dataclasses
import typing
from functools import cache

from pydantic import ConfigDict, TypeAdapter, ValidationError

from .errors import ConfigError, did_you_mean, unknown


def build(kind: str, registry: dict[str, type], name: str, params: dict, extra_names: tuple[str, ...] = ()):
    """`registry[name](**params)`, each value first coerced to its field's declared type; an unknown name or
    parameter, or a value of the wrong type, is a ConfigError naming it (with a close match) and the valid ones."""
    if name not in registry:
        raise unknown(kind, name, (*extra_names, *registry))
    cls = registry[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown_keys = sorted(set(params) - set(fields))
    if unknown_keys:
        hint = did_you_mean(unknown_keys[0], fields) if len(unknown_keys) == 1 else ""
        raise ConfigError(f"{kind} {name!r} has no parameter {', '.join(unknown_keys)}{hint}; its parameters are: "
                          f"{', '.join(fields) or '(none)'}.")
    typed = {key: coerce(kind, name, cls, key, value) for key, value in params.items()}
    try:
        return cls(**typed)
    except TypeError as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}.") from None


def coerce(kind: str, name: str, cls: type, key: str, value):
    """`value` as the declared type of field `key` (a YAML 3 for a float field is 3.0; 2.5 for an int is refused)."""
    adapter = field_adapters(cls).get(key)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        expected = type_name(typing.get_type_hints(cls)[key])
        reason = exc.errors()[0]["msg"]
        raise ConfigError(f"{kind} {name!r}: parameter {key}={value!r} must be {expected} ({reason})"
                          f"{example(cls, key)}.") from None


@cache
def field_adapters(cls: type) -> dict[str, TypeAdapter]:
    """A pydantic validator per field whose annotation pydantic understands (tensors and the like are skipped)."""
    adapters = {}
    for key, hint in typing.get_type_hints(cls).items():
        try:
            adapters[key] = TypeAdapter(hint, config=ConfigDict(strict=False))
        except Exception:  # noqa: BLE001 - an annotation pydantic cannot check (a tensor) is passed through
            continue
    return adapters


def type_name(hint) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) is not typing.Literal:
        return " or ".join(type_name(a) for a in args)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def example(cls: type, key: str) -> str:
    """'; e.g. key=<its default>' when the field has a default worth showing."""
    default = next(f for f in dataclasses.fields(cls) if f.name == key).default
    if default is dataclasses.MISSING or default is None:
        return ""
    return f"; e.g. {key}={str(default).lower() if isinstance(default, bool) else default}"
