"""The checks every config field goes through: its declared type, a finite number, a positive
count, one of a list of choices; ``ConfigError`` names the field, so the command line can name
its flag."""
from __future__ import annotations

import dataclasses
import json
import math


class ConfigError(ValueError):
    """A bad setting; ``field`` names it (``num_agents``), so the command line can name its flag."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def json_type(value) -> str:
    """How a JSON value reads to the user: null, true, a string, a list, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    names = {str: "a string", list: "a list", tuple: "a list", dict: "an object", int: "an integer",
             float: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value, default=str)[:40]})"


ELEMENT_KINDS = {"tuple[int, ...]": "int", "tuple[float, ...]": "float", "tuple[str, ...]": "str"}


def check_types(obj) -> None:
    """Every field holds its declared type, named in the error: an int field takes no bool and
    no string, a float field also takes an int (stored as float), a tuple field a list of its
    element type. Runs before every other check of a section."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{type(obj).__name__.removesuffix('Config').lower()}.{f.name}"
        if f.type in ELEMENT_KINDS:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f.name, f"{where} must be a list of {ELEMENT_KINDS[f.type]}s, "
                                          f"got {json_type(value)}")
            kind = ELEMENT_KINDS[f.type]
            items = tuple(typed(v, kind, f.name, f"{where}[{i}]") for i, v in enumerate(value))
            object.__setattr__(obj, f.name, items)
        else:
            object.__setattr__(obj, f.name, typed(value, f.type, f.name, where))


def typed(value, kind: str, field_name: str, where: str):
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    else:
        raise AssertionError(f"no type check for {kind}")
    if not ok:
        wanted = {"bool": "true or false", "int": "an integer", "float": "a number",
                  "str": "a string"}[kind]
        raise ConfigError(field_name, f"{where} must be {wanted}, got {json_type(value)}")
    return value


def finite(obj, allow_inf=()):
    """Every float field must be a number (NaN never; inf only where it means something)."""
    for f in dataclasses.fields(obj):
        values = getattr(obj, f.name)
        for v in values if isinstance(values, tuple) else (values,):
            if isinstance(v, float) and (math.isnan(v) or (math.isinf(v) and f.name not in allow_inf)):
                raise ConfigError(f.name, f"{type(obj).__name__}.{f.name} must be a finite number, got {v}")


def positive(obj, *names):
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(name, f"{name} must be a positive integer, got {getattr(obj, name)}")


def choice(obj, name, choices):
    if getattr(obj, name) not in choices:
        raise ConfigError(name, f"{name} must be one of {choices}, got {getattr(obj, name)!r}")
