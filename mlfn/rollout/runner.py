"""The rollout loop: give the candidate each step's share of the alias, check its own
numbers every interval, and promote, hold, or send the traffic back to stable.

Per check (every `interval`): the candidate's window since the last conclusive check
(requests, errors, p99; the stable version's over the same window next to it). Fewer than
`min_requests` requests is inconclusive: the step is held, and after `max_wait` on one
step the rollout gives up (traffic back on stable). A failed check counts; after
`failures` of them the traffic goes back on stable. A passed check moves to the next step:
the pre-step hook, the quality gate (probe), the new split, the post-step hook. Reaching
100% promotes.

The state is written with the alias at every traffic change and at the end (a write of
an OpenWhisk alias replaces its action, so checks in between are kept in memory), so a rollout
killed at any point leaves the alias on existing versions and `resume` continues from the
recorded step; before each write the runner re-reads the alias, so an `abort` from another
process stops it (Aborted).
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from mlfn.lifecycle import Lifecycle
from mlfn.rollout.quality import Probe, quality_gate
from mlfn.rollout.state import (ABORTED, INCONCLUSIVE, PROMOTED, ROLLED_BACK, RUNNING, Check, RolloutState, now_iso,
                                rollouts_of, with_state)

EXIT_CODES = {PROMOTED: 0, ROLLED_BACK: 4, ABORTED: 5, INCONCLUSIVE: 6}
HOOK_TIMEOUT = 600


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RolloutResult:
    function: str
    alias: str
    candidate: str
    stable: str
    status: str
    exit_code: int
    reason: str
    steps: list
    step: int
    weights: dict  # the alias's split at the end
    started_by: str = ""
    started_at: str = ""
    finished_at: str = ""
    checks: list = field(default_factory=list)  # every check of this run, in order


def gate_reasons(cand, stable, s) -> list:
    """Why the candidate's window fails its thresholds (empty: it passes). With
    compare_stable (--vs-stable) the thresholds bound how much worse than the stable
    version over the same window it may be, rather than its own numbers."""
    relative = s.compare_stable and stable.requests > 0
    base_err = stable.error_rate if relative else 0.0
    base_p99 = (stable.p99_ms or 0.0) if relative else 0.0
    than = " more than stable's" if relative else ""
    reasons = []
    if cand.error_rate - base_err > s.max_error_rate:
        reasons.append(f"error rate {cand.error_rate:.1f}% > {s.max_error_rate:g}%{than}"
                       + (f" ({base_err:.1f}%)" if relative else ""))
    if s.max_p99_ms is not None and cand.p99_ms is not None and cand.p99_ms - base_p99 > s.max_p99_ms:
        reasons.append(f"p99 {cand.p99_ms:.0f}ms > {s.max_p99_ms:g}ms{than}"
                       + (f" ({base_p99:.0f}ms)" if relative else ""))
    return reasons


class Aborted(Exception):
    """The rollout is no longer running on the platform (aborted from elsewhere)."""


class RolloutRun:
    def __init__(self, lifecycle: Lifecycle, state: RolloutState, metrics, probe: Optional[Probe] = None,
                 progress: Callable[[str], None] = lambda m: None, sleep: Callable[[float], None] = time.sleep):
        self.lifecycle, self.state, self.metrics, self.probe = lifecycle, state, metrics, probe
        self.settings = state.rollout_settings()
        self.progress, self.sleep = progress, sleep
        self.function, self.alias = state.function, state.alias
        self.checks: list = []
        self.weights: dict = {}
        self.window_start = now_ms()
        self.step_started = self.next_check = time.monotonic()

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> RolloutResult:
        try:
            if self.state.step < 0:
                self._advance()
            else:
                self.progress(f"Resuming {self.state.summary()}")
                self.weights = self._split(self.state.weight)
            while self.state.status == RUNNING:  # a fixed schedule per step: slow reads do not add up
                self.next_check += self.settings.interval
                self.sleep(max(0.0, self.next_check - time.monotonic()))
                self._guard()
                self._check()
        except Aborted as e:
            self.state.status, self.state.reason = ABORTED, str(e)
            self.progress(f"Rollout of {self.state.candidate} was aborted elsewhere: {e}")
            alias = self.lifecycle.target.read(self.function).aliases.get(self.alias)
            self.weights = dict(alias.weights) if alias is not None else {}
        return self.result()

    def result(self) -> RolloutResult:
        s = self.state
        return RolloutResult(s.function, s.alias, s.candidate, s.stable, s.status, EXIT_CODES.get(s.status, 1),
                             s.reason, s.steps, s.step, dict(self.weights), s.started_by, s.started_at,
                             s.finished_at, self.checks)

    def _record(self, check: Check) -> None:
        self.state.add(check)
        self.checks.append(check.__dict__)
        self.progress(check.line())

    def _check(self) -> None:
        s = self.settings
        until = now_ms()
        cand = self.metrics.window(self.state.candidate, self.window_start, until)
        stable = self.metrics.window(self.state.stable, self.window_start, until)
        values = {"window_s": round((until - self.window_start) / 1000, 1), "candidate": cand.values(),
                  "stable": stable.values()}
        check = Check(now_iso(), self.state.step, self.state.weight, "metrics", "pass", values=values)
        if cand.requests < s.min_requests:
            check.result, check.reason = "inconclusive", f"{cand.requests} requests < --min-requests {s.min_requests}"
            self._record(check)
            if time.monotonic() - self.step_started >= s.max_wait:
                self._end(INCONCLUSIVE, f"fewer than {s.min_requests} requests on {self.state.candidate} "
                                        f"within --max-wait {s.max_wait:g}s")
            return
        self.window_start = until
        reasons = gate_reasons(cand, stable, s)
        if not reasons:
            self._record(check)
            self._advance()
            return
        check.result, check.reason = "fail", "; ".join(reasons)
        self._record(check)
        self.state.failed_checks += 1
        if self.state.failed_checks >= s.failures:
            self._end(ROLLED_BACK, f"{self.state.failed_checks} failed checks: {check.reason}")

    # ---- steps ------------------------------------------------------------------------------

    def _split(self, weight: int) -> dict:
        c, s = self.state.candidate, self.state.stable
        return {c: 100} if weight >= 100 else {s: 100 - weight, c: weight}

    def _advance(self) -> None:
        nxt = self.state.step + 1
        weight = self.state.steps[nxt]
        if not self._hook("pre-step", self.settings.pre_step, nxt, weight):
            return
        if self.probe is not None and not self._quality(nxt, weight):
            return
        self.state.step = nxt
        self._write(self._split(weight))
        self.progress(f"step {nxt + 1}/{len(self.state.steps)}: {self.state.candidate} takes {weight}% of "
                      f"alias '{self.alias}'")
        if not self._hook("post-step", self.settings.post_step, nxt, weight):
            return
        # the step starts once its split is written (an OpenWhisk alias update can take seconds)
        self.window_start, self.step_started = now_ms(), time.monotonic()
        self.next_check = self.step_started
        if weight >= 100:
            self._end(PROMOTED, f"{self.state.candidate} passed every step")

    def _quality(self, step: int, weight: int) -> bool:
        s = self.settings
        q = quality_gate(self.lifecycle.target, self.function, self.state.candidate, self.state.stable, self.probe,
                         s.max_accuracy_drop, s.min_agreement)
        self._record(Check(now_iso(), step, weight, "quality", "pass" if q.passed else "fail", q.reason, q.values))
        if not q.passed:
            self._end(ROLLED_BACK, f"quality gate before {weight}%: {q.reason}")
        return q.passed

    def _hook(self, gate: str, command: Optional[str], step: int, weight: int) -> bool:
        if not command:
            return True
        env = {**os.environ, "MLFN_ROLLOUT_FUNCTION": self.function, "MLFN_ROLLOUT_ALIAS": self.alias,
               "MLFN_ROLLOUT_CANDIDATE": self.state.candidate, "MLFN_ROLLOUT_STABLE": self.state.stable,
               "MLFN_ROLLOUT_STEP": str(step + 1), "MLFN_ROLLOUT_WEIGHT": str(weight)}
        try:
            done = subprocess.run(command, shell=True, env=env, timeout=HOOK_TIMEOUT, capture_output=True, text=True)
            code, tail = done.returncode, (done.stderr or done.stdout).strip()[-200:]
        except subprocess.TimeoutExpired:
            code, tail = -1, f"timed out after {HOOK_TIMEOUT}s"
        check = Check(now_iso(), step, weight, gate, "pass" if code == 0 else "fail",
                      "" if code == 0 else f"'{command}' exited with {code}" + (f": {tail}" if tail else ""))
        self._record(check)
        if code != 0:
            self._end(ROLLED_BACK, f"{gate} hook failed: {check.reason}")
        return code == 0

    def _end(self, status: str, reason: str) -> None:
        weights = self._split(100) if status == PROMOTED else {self.state.stable: 100}
        self.state.finish(status, reason)
        self.progress(f"{status.upper()}: {reason}; alias '{self.alias}' goes to {next(iter(weights))} at 100%")
        self._write(weights)

    # ---- the platform -----------------------------------------------------------------------

    def _guard(self):
        """The alias as it is now; Aborted when our rollout no longer runs there."""
        alias = self.lifecycle.target.read(self.function).aliases.get(self.alias)
        ours = next((r for r in rollouts_of(alias) if r.id == self.state.id), None)
        if ours is None or ours.status != RUNNING:
            raise Aborted(ours.reason if ours is not None and ours.reason else "its state is gone from the alias")
        return alias

    def _write(self, weights: dict) -> None:
        alias = self._guard()
        self.state.updated_at = now_iso()
        self.lifecycle.route_rollout(self.function, self.alias, weights, with_state(alias, self.state))
        self.weights = dict(weights)
