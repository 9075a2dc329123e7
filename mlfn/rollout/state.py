"""A rollout's state, kept with its alias on the platform (Alias.rollouts / AliasRecord.rollouts,
written through each platform's codec): so `mlfn rollout status|abort|resume` work from any
machine, and a second rollout of the alias is refused while one runs.

The alias keeps its last ROLLOUTS_KEPT rollouts, oldest first; the last one whose status is
"running" is the rollout in progress. Each keeps its last CHECKS_KEPT checks.
"""
from __future__ import annotations

import getpass
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional

from mlfn.rollout.settings import RolloutSettings

RUNNING, PROMOTED, ROLLED_BACK, ABORTED, INCONCLUSIVE = "running", "promoted", "rolled back", "aborted", "inconclusive"
FINAL = (PROMOTED, ROLLED_BACK, ABORTED, INCONCLUSIVE)
ROLLOUTS_KEPT = 5
CHECKS_KEPT = 40


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def started_by() -> str:
    """Who runs this rollout: the CI actor when there is one, else user@host."""
    actor = os.environ.get("GITHUB_ACTOR") or os.environ.get("GITLAB_USER_LOGIN")
    if actor:
        return f"{actor} (CI)"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class Check:
    """One gate evaluation: metrics of a window, the quality probe, or a hook."""

    at: str
    step: int  # index into steps (-1: before the first traffic)
    weight: int  # the candidate's percent while checked (or about to be given, for the quality gate)
    gate: str  # "metrics" | "quality" | "pre-step" | "post-step"
    result: str  # "pass" | "fail" | "inconclusive"
    reason: str = ""
    values: dict = field(default_factory=dict)  # candidate/stable numbers, accuracy, ...

    def line(self) -> str:
        vals = " ".join(f"{k}={v}" for k, v in self.values.items() if not isinstance(v, dict))
        for who in ("candidate", "stable"):
            if isinstance(self.values.get(who), dict):
                vals += f" {who}[" + " ".join(f"{k}={v}" for k, v in self.values[who].items()) + "]"
        return (f"step {self.step + 1} ({self.weight}%) {self.gate}: {self.result.upper()}"
                + (f" - {self.reason}" if self.reason else "") + (f" ({vals.strip()})" if vals.strip() else ""))


@dataclass
class RolloutState:
    id: str
    function: str
    alias: str
    candidate: str
    stable: str
    settings: dict  # RolloutSettings.to_dict()
    status: str = RUNNING
    step: int = -1  # index into settings["steps"] of the traffic now given; -1 before any
    failed_checks: int = 0
    started_by: str = ""
    started_at: str = ""
    updated_at: str = ""
    finished_at: str = ""
    reason: str = ""  # why it ended
    checks: list = field(default_factory=list)  # list[dict] of Check

    @classmethod
    def new(cls, function: str, alias: str, candidate: str, stable: str, settings: RolloutSettings) -> "RolloutState":
        at = now_iso()
        return cls(id=uuid.uuid4().hex[:12], function=function, alias=alias, candidate=candidate, stable=stable,
                   settings=settings.to_dict(), started_by=started_by(), started_at=at, updated_at=at)

    @classmethod
    def from_dict(cls, data: dict) -> "RolloutState":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        out = asdict(self)
        out["checks"] = out["checks"][-CHECKS_KEPT:]
        return out

    @property
    def steps(self) -> list:
        return list(self.settings["steps"])

    @property
    def weight(self) -> int:
        return self.steps[self.step] if self.step >= 0 else 0

    def rollout_settings(self) -> RolloutSettings:
        return RolloutSettings.from_dict(self.settings)

    def add(self, check: Check) -> None:
        self.checks.append(asdict(check))

    def finish(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        self.finished_at = self.updated_at = now_iso()

    def summary(self) -> str:
        where = (f"step {self.step + 1}/{len(self.steps)} ({self.weight}%)" if self.status == RUNNING
                 else f"{self.status} at {self.finished_at}" + (f": {self.reason}" if self.reason else ""))
        return (f"{self.candidate} over {self.stable} on alias '{self.alias}': {where}; "
                f"started by {self.started_by} at {self.started_at}")


def rollouts_of(alias) -> list:
    """The rollout states an Alias keeps, oldest first."""
    return [RolloutState.from_dict(r) for r in (alias.rollouts if alias is not None else [])]


def active(alias) -> Optional[RolloutState]:
    running = [r for r in rollouts_of(alias) if r.status == RUNNING]
    return running[-1] if running else None


def with_state(alias, state: RolloutState) -> list:
    """The alias's rollout list with `state` put in (replacing the one with its id), bounded."""
    kept = [r.to_dict() for r in rollouts_of(alias) if r.id != state.id]
    return (kept + [state.to_dict()])[-ROLLOUTS_KEPT:]
