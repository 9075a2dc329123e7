"""Traffic splits: parse `v3=90 v4=10` and validate them (the weighted pick at request
time is the function image's `mlfn_runtime.router`).

Validated before anything is sent (kn's pkg/traffic/compute.go order): each weight an
integer 0-100, no version twice, at most one version without a weight (it gets the
remainder), sum exactly 100.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

from mlfn.errors import MlfnError

_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class TrafficError(MlfnError):
    exit_code = 2


def version_number(name: str) -> int:
    m = _VERSION.match(name or "")
    if not m:
        raise TrafficError(f"'{name}' is not a version name; versions are named v1, v2, ...")
    return int(m.group(1))


def parse_splits(items: Iterable[str]) -> dict:
    """["v3=90", "v4"] -> {"v3": 90, "v4": 10} (one unnamed weight takes the remainder)."""
    weights: dict = {}
    open_: Optional[str] = None
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        version_number(name)
        if name in weights or name == open_:
            raise TrafficError(f"Version {name} is given twice in the traffic split; name each version once.")
        if not sep:
            if open_ is not None:
                raise TrafficError(
                    f"Only one version may go without a weight ({open_} and {name} both do); give one of them '=N'."
                )
            open_ = name
            continue
        try:
            w = int(value)
        except ValueError:
            raise TrafficError(f"Weight '{value}' for {name} is not a whole number; use e.g. {name}=10.") from None
        weights[name] = w
    if open_ is not None:
        weights[open_] = 100 - sum(weights.values())
    return validate_weights(weights)


def validate_weights(weights: dict) -> dict:
    if not weights:
        raise TrafficError("A traffic split needs at least one version, e.g. v1=100.")
    for name, w in weights.items():
        version_number(name)
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
            raise TrafficError(f"Weight {w!r} for {name} must be a whole number from 0 to 100.")
    total = sum(weights.values())
    if total != 100:
        raise TrafficError(
            f"Traffic weights sum to {total}, not 100 ({format_weights(weights)}); adjust them so they add up to 100."
        )
    return dict(sorted(weights.items(), key=lambda kv: version_number(kv[0])))


def format_weights(weights: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in weights.items())
