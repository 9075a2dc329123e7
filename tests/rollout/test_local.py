"""Rollouts end to end on the local target (real containers): promotion, rollback by the
error-rate, p99 and quality gates, inconclusive without traffic."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from mlfn.rollout import INCONCLUSIVE, PROMOTED, ROLLED_BACK, RolloutSettings, start, status
from tests.rollout.conftest import wsk_flags

pytestmark = pytest.mark.docker


def settings(**kw) -> RolloutSettings:
    base = dict(steps=[20, 50, 100], interval=2.0, max_error_rate=5.0, min_requests=3, failures=2, max_wait=20.0)
    return RolloutSettings(**{**base, **kw})


def test_healthy_candidate_goes_through_every_step(two_versions, lifecycle, load_dir, probe_npz):
    fn = two_versions({})
    lines = []
    result = start(lifecycle.target, fn, "v2", settings(load=str(load_dir), rate=10, probe=str(probe_npz),
                                                         max_p99_ms=2000), progress=lines.append)
    assert result.status == PROMOTED and result.exit_code == 0, lines
    assert lifecycle.target.read(fn).aliases["default"].weights == {"v2": 100}
    passed = [c for c in result.checks if c["gate"] == "metrics" and c["result"] == "pass"]
    assert [c["weight"] for c in passed] == [20, 50]  # one passing check per step below 100
    assert all(c["values"]["candidate"]["requests"] >= 3 for c in passed)
    assert [c["values"]["accuracy"] for c in result.checks if c["gate"] == "quality"] == [100.0] * 3
    st = status(lifecycle.target, fn)
    assert st.active is None and st.history[-1]["status"] == PROMOTED


def warm(target, fn):
    """One request to each version first, so that container start-up is not what is timed."""
    for v in ("v1", "v2"):
        target.invoke(fn, {"instances": [[1.0]]}, version=v)


def test_failing_candidate_rolled_back_at_first_step(two_versions, lifecycle, load_dir, local_api):
    """Run as the CLI in its own process (the controller runs in this one), timed from the
    first request v2 served (its activation record) to the decision, read off stderr as it
    comes. (Before that, the new weighted alias's router containers are starting: no check
    can be conclusive without requests.)"""
    fn = two_versions({"MLFN_TEST_FAIL_RATE": "0.3"})
    warm(lifecycle.target, fn)
    interval, failures = 3.0, 2
    cmd = [sys.executable, "-m", "mlfn.cli", "rollout", fn, "v2", "--steps", "20,50,100", "--interval", "3s",
           "--max-error-rate", "5%", "--min-requests", "3", "--failures", str(failures), "--load", str(load_dir),
           "--rate", "20", "--output", "json", *wsk_flags(local_api)]
    since_ms = int(time.time() * 1000)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stamped = [(time.time(), line) for line in proc.stderr]
    doc = json.loads(proc.stdout.read())
    assert proc.wait() == 4 and doc["status"] == ROLLED_BACK
    assert doc["step"] == 0  # never beyond the first step
    t0 = lifecycle.target.activations(fn, "v2", since_ms)[0].start_ms / 1000
    decided = next(t for t, line in stamped if line.startswith("ROLLED BACK"))
    assert decided - t0 <= failures * interval + interval + 1, "".join(f"{t - t0:5.1f} {line}" for t, line in stamped)
    failed = [c for c in doc["checks"] if c["result"] == "fail"]
    assert len(failed) == 2 and all(c["values"]["candidate"]["error_rate"] > 5 for c in failed)
    assert all(c["values"]["stable"]["errors"] == 0 for c in failed)  # judged on v2's own numbers
    assert lifecycle.target.read(fn).aliases["default"].weights == {"v1": 100}


def test_slow_candidate_rolled_back_by_p99(two_versions, lifecycle, load_dir):
    fn = two_versions({"MLFN_TEST_DELAY": "0.4"})
    result = start(lifecycle.target, fn, "v2", settings(load=str(load_dir), rate=10, max_p99_ms=300))
    assert result.status == ROLLED_BACK
    failed = [c for c in result.checks if c["result"] == "fail"]
    assert failed and all("p99" in c["reason"] and c["values"]["candidate"]["p99_ms"] > 300 for c in failed)
    assert all(c["values"]["candidate"]["error_rate"] == 0 for c in failed)
    assert lifecycle.target.read(fn).aliases["default"].weights == {"v1": 100}


def test_wrong_answers_rolled_back_by_quality_gate_before_traffic(two_versions, lifecycle, probe_npz, local_api):
    fn = two_versions({"MLFN_TEST_WRONG": "1"})
    result = start(lifecycle.target, fn, "v2", settings(probe=str(probe_npz)))
    assert result.status == ROLLED_BACK and result.step == -1
    gate = result.checks[-1]
    assert gate["gate"] == "quality" and gate["values"] == {"accuracy": 0.0, "stable_accuracy": 100.0}
    alias = lifecycle.target.read(fn).aliases["default"]
    assert alias.weights == {"v1": 100} and all("v2" not in h for h in alias.history)  # never got traffic


def test_no_traffic_is_inconclusive_and_back_on_stable(two_versions, lifecycle):
    fn = two_versions({})
    t0 = time.monotonic()
    result = start(lifecycle.target, fn, "v2", settings(interval=1.0, max_wait=3.0))
    assert result.status == INCONCLUSIVE and result.exit_code == 6
    assert time.monotonic() - t0 < 8
    assert {c["result"] for c in result.checks} == {"inconclusive"}
    assert lifecycle.target.read(fn).aliases["default"].weights == {"v1": 100}
