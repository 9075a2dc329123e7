"""The settings of one rollout and the parsers of their flag forms ("60s", "250ms", "1%").

Settings come from the `rollout:` section of mlfn.yaml (mlfn.config.RolloutConfig) and
from flags, flags winning; the resolved RolloutSettings is stored with the rollout's state
on the platform, so `mlfn rollout resume` continues with exactly the same gates.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from mlfn.errors import ConfigError
from mlfn.targets.interface import DEFAULT_ALIAS

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value, where: str) -> float:
    """'60s', '10m', '250ms', '1.5' (seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{where} '{value}' is not a duration; write e.g. 60s, 10m or 250ms.")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_percent(value, where: str) -> float:
    """'1%', '1', 0.5 -> percent points (0-100)."""
    text = str(value).strip().rstrip("%").strip()
    try:
        pct = float(text)
    except ValueError:
        raise ConfigError(f"{where} '{value}' is not a percentage; write e.g. 1% or 0.5%.") from None
    if not 0 <= pct <= 100:
        raise ConfigError(f"{where} '{value}' must be between 0% and 100%.")
    return pct


def parse_steps(value, where: str = "--steps") -> list:
    """'10,25,50,100' (or a list) -> [10, 25, 50, 100]: rising whole percents ending at 100."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        steps = [int(str(s).strip().rstrip("%")) for s in items if str(s).strip()]
    except ValueError:
        raise ConfigError(f"{where} '{value}' must be whole percents separated by commas, e.g. 10,25,50,100.") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ConfigError(f"{where} '{value}' must rise strictly, each from 1 to 100, e.g. 10,25,50,100.")
    if steps[-1] != 100:
        steps.append(100)
    return steps


@dataclass
class RolloutSettings:
    """Everything that decides a rollout; durations in seconds, rates in percent points."""

    steps: list = field(default_factory=lambda: [10, 25, 50, 100])
    interval: float = 60.0  # seconds between checks
    max_error_rate: float = 1.0  # percent of the candidate's own requests
    max_p99_ms: Optional[float] = None  # the candidate's own 99th percentile latency
    min_requests: int = 50  # fewer in a window: inconclusive (the step is held)
    failures: int = 2  # failed checks before rolling back
    max_wait: float = 600.0  # seconds a step may stay inconclusive before giving up
    alias: str = DEFAULT_ALIAS
    probe: Optional[str] = None  # .npz (x, y) or a folder of images in label sub-folders
    max_accuracy_drop: float = 1.0  # accuracy points (or MSE for regression) lost vs stable
    min_agreement: Optional[float] = None  # percent of top-1 answers equal to stable's (no labels)
    probe_task: str = "auto"  # auto | classification | regression
    load: Optional[str] = None  # a folder of inputs sent to the alias (synthetic load)
    rate: float = 20.0  # requests per second of the synthetic load
    pre_step: Optional[str] = None  # a shell command run before each traffic increase
    post_step: Optional[str] = None  # a shell command run after each traffic increase
    prometheus: Optional[str] = None  # Prometheus base URL (Knative)
    queries: dict = field(default_factory=dict)  # requests/errors/p99 PromQL templates overriding the defaults
    compare_stable: bool = False  # --vs-stable: thresholds bound the candidate's numbers minus stable's

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RolloutSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def check(self) -> "RolloutSettings":
        if self.interval <= 0:
            raise ConfigError(f"--interval must be positive (got {self.interval}s).")
        if self.failures < 1:
            raise ConfigError(f"--failures must be at least 1 (got {self.failures}).")
        if self.min_requests < 1:
            raise ConfigError(f"--min-requests must be at least 1 (got {self.min_requests}).")
        if self.rate <= 0:
            raise ConfigError(f"--rate must be positive (got {self.rate}).")
        unknown = sorted(set(self.queries) - {"requests", "errors", "p99"})
        if unknown:
            raise ConfigError(f"rollout.queries has unknown key(s) {', '.join(unknown)}; use requests, errors, p99.")
        return self


def resolve(section, flags: dict) -> RolloutSettings:
    """RolloutSettings from the mlfn.yaml `rollout:` section (or None) under flags in their
    text forms (None: not given)."""
    base = {f.name: getattr(section, f.name) for f in fields(section)} if section is not None else {}
    raw = {k: v for k, v in {**base, **flags}.items() if v is not None and not (k == "queries" and not v)}
    out = RolloutSettings()
    for key, value in raw.items():
        where = f"--{key.replace('_', '-')}"
        if key == "max_p99":
            key, value = "max_p99_ms", parse_duration(value, where) * 1000
        if key == "steps":
            value = parse_steps(value, where)
        elif key in ("interval", "max_wait"):
            value = parse_duration(value, where)
        elif key in ("max_error_rate", "min_agreement"):
            value = parse_percent(value, where)
        elif key == "max_accuracy_drop":
            value = float(str(value).rstrip("%"))
        setattr(out, key, value)
    return out.check()
