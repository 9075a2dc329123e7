"""Step parameters: a checker per kind of value, returning the normalised value or raising
ValueError with what the value must be (`pipeline.parse_steps` names the step and key)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


class Param:
    """One step parameter: a checker returning the normalised value or raising ValueError."""

    def __init__(self, check: Callable[[Any], Any], required: bool = False, default: Any = None):
        self.check, self.required, self.default = check, required, default


def number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("a number")
    if not np.isfinite(v):
        raise ValueError("a finite number")
    return float(v)


def positive_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("a positive integer")
    return v


def choice(choices):
    def check(v):
        if v is False and "false" in choices:
            return "false"
        if not isinstance(v, str) or v.lower() not in [c.lower() for c in choices]:
            raise ValueError("one of " + ", ".join(choices))
        return next(c for c in choices if c.lower() == v.lower())

    return check


def numbers(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [number(v)]
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError("a number or a non-empty list of numbers")
    return [number(x) for x in v]


def nonzero_numbers(v):
    out = numbers(v)
    if any(x == 0 for x in out):
        raise ValueError("a non-zero number or a list of non-zero numbers")
    return out


def pad_value(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return tuple(v)
    raise ValueError("a number or a list of numbers (one per channel)")


def string(v):
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def py_file(v):
    v = string(v)
    if not v.endswith(".py"):
        raise ValueError("a Python file name ending in .py")
    return v

