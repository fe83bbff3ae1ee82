"""How one setting's text (from the environment, --set or a tfxsp.toml value) becomes a value of its field's type, and
how that type is named in an error. pipeline/config.py turns the ValueError these raise into a ConfigError naming the
key; the types are PipelineConfig's field annotations."""
from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any


def parse(kind: Any, raw: str) -> Any:
    """`raw` as a value of type `kind` (bool, int, float, str, an optional one, a tuple of names, a mapping); a
    ValueError or TypeError when it is not one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(raw)
        return lowered in ("1", "true", "yes")
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if raw.strip().lower() in ("", "auto", "none"):
            return None
        return _parse_as(next(a for a in args if a is not type(None)), raw)
    return _parse_as(kind, raw)


def _parse_as(kind: Any, raw: str) -> Any:
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if typing.get_origin(kind) is tuple:
        text = raw.strip()
        items = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(raw)
        return tuple(items)
    if typing.get_origin(kind) in (Mapping, dict):
        value = json.loads(raw) if raw.strip() else {}
        return mapping(kind, value)
    return raw


def mapping(kind: Any, value: Any) -> dict[str, Any]:
    """A JSON object or TOML table checked against Mapping[str, str] or Mapping[str, float]."""
    if not isinstance(value, dict):
        raise ValueError(value)
    if typing.get_args(kind)[1] is float:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
            raise ValueError(value)
        return {k: float(v) for k, v in value.items()}
    if not all(isinstance(v, str) for v in value.values()):
        raise ValueError(value)
    return value


def describe(kind: Any) -> str:
    names = {int: "an int", float: "a float", bool: "true or false", str: "a string"}
    if typing.get_origin(kind) is tuple:
        return "a list of column names (a,b,c or a JSON array)"
    if typing.get_origin(kind) in (Mapping, dict):
        if typing.get_args(kind)[1] is float:
            return 'a JSON object of column -> number, e.g. {"body_mass_g": 0.5}'
        return 'a JSON object of column -> role, e.g. {"Comments": "ignored"}'
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args and typing.get_origin(kind) in (typing.Union, types.UnionType):
        return f"{describe(args[0])} or nothing (unset)"
    return names.get(kind, str(kind))
