"""A rollout is safe to interrupt: killed mid-step, `resume` from another process continues
from the recorded step; `abort` from another process stops a running one (exit 5)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlfn.errors import TargetError
from mlfn.rollout import ABORTED, PROMOTED, RUNNING, RolloutSettings, abort, begin, status
from tests.rollout.conftest import wsk_flags

pytestmark = pytest.mark.docker


def cli(fn, *args, local_api) -> list:
    return [sys.executable, "-m", "mlfn.cli", "rollout", *args[:1], fn, *args[1:], *wsk_flags(local_api)]


def wait_for_step(target, fn, step: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(target, fn)
        if st.active and st.active["step"] >= step:
            return st.active
        time.sleep(0.2)
    raise AssertionError(f"the rollout of {fn} did not reach step {step + 1} in {timeout}s")


def test_killed_mid_step_then_resumed_from_another_process(two_versions, lifecycle, load_dir, local_api):
    fn = two_versions({})
    proc = subprocess.Popen(cli(fn, "start", "v2", "--steps", "20,50,100", "--interval", "3s", "--min-requests",
                                "3", "--load", str(load_dir), "--rate", "10", local_api=local_api),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        recorded = wait_for_step(lifecycle.target, fn, 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    alias = lifecycle.target.read(fn).aliases["default"]
    assert alias.weights == {"v1": 80, "v2": 20}  # existing versions only, as the step left them
    assert status(lifecycle.target, fn).active["id"] == recorded["id"]
    with pytest.raises(TargetError, match="already has a rollout in progress"):
        begin(lifecycle.target, fn, "v2", RolloutSettings())
    # resume from a fresh process: the recorded step and settings (load included)
    out = subprocess.run(cli(fn, "resume", "--output", "json", local_api=local_api), capture_output=True,
                         text=True, timeout=300)
    doc = json.loads(out.stdout)
    assert out.returncode == 0 and doc["status"] == PROMOTED, out.stderr
    assert out.stderr.startswith("Resuming v2 over v1 on alias 'default': step 1/3 (20%)")
    assert [c["weight"] for c in doc["checks"] if c["gate"] == "metrics" and c["result"] == "pass"] == [20, 50]
    assert lifecycle.target.read(fn).aliases["default"].weights == {"v2": 100}


def test_abort_from_another_process(two_versions, lifecycle, load_dir, local_api):
    fn = two_versions({})
    proc = subprocess.Popen(cli(fn, "start", "v2", "--steps", "20,50,100", "--interval", "2s", "--min-requests",
                                "100000", "--max-wait", "10m", "--load", str(load_dir), "--rate", "5",
                                "--output", "json", local_api=local_api),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(lifecycle.target, fn, 0)
        aborted = abort(lifecycle.target, fn, reason="stop it")
        assert aborted.status == ABORTED and aborted.weights == {"v1": 100}
        t0 = time.monotonic()
        noticed = None
        err = ""
        for line in proc.stderr:
            err += line
            if "aborted elsewhere" in line and noticed is None:
                noticed = time.monotonic() - t0
        out = proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 5, err
    assert noticed is not None and noticed <= 2 + 1  # at its next check (interval 2s)
    doc = json.loads(out)
    assert doc["status"] == ABORTED and doc["weights"] == {"v1": 100} and "stop it" in err
    st = status(lifecycle.target, fn)
    assert st.active is None and st.history[-1]["status"] == ABORTED and st.weights == {"v1": 100}
    assert st.history[-1]["status"] != RUNNING
