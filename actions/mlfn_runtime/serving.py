"""Serving settings: function.json's `serving`, overridden by `MLFN_SERVING_<KEY>`
environment variables, with the defaults written here once; and the CPUs this process
may use (which caps the per-thread interpreter pool)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from mlfn_runtime.errors import ConfigurationError
from mlfn_runtime.interpreter import check_interpreter_mode

FUNCTION_FILE = "function.json"


@dataclass
class Serving:
    max_batch_size: int = 32
    max_payload_bytes: int = 1048576
    interpreter: str = "per-thread"  # per-thread | lock (see bench/runtime_bench.py)
    num_threads: int = 1
    workers: int = 8

    @classmethod
    def from_dict(cls, data: Optional[dict], environ: Optional[dict] = None) -> "Serving":
        """function.json's `serving` (None: the defaults), overridden by `MLFN_SERVING_<KEY>`
        environment variables (e.g. MLFN_SERVING_INTERPRETER=per-thread) so a deployment can
        tune a built image without rebuilding it."""
        data = dict(data or {})
        env = os.environ if environ is None else environ
        out = cls()
        for key in vars(out):
            value = env.get("MLFN_SERVING_" + key.upper())
            if value:
                try:
                    data[key] = int(value) if isinstance(getattr(out, key), int) else value
                except ValueError:
                    raise ConfigurationError(f"MLFN_SERVING_{key.upper()} must be an integer, not {value!r}.") from None
        for key, value in data.items():
            if not hasattr(out, key):
                continue  # newer build sides may add keys; ignore what this runtime does not know
            default = getattr(out, key)
            if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"serving.{key} in {FUNCTION_FILE} must be a positive integer, not {value!r}.")
            setattr(out, key, value)
        check_interpreter_mode(out.interpreter, f"serving.interpreter in {FUNCTION_FILE}")
        return out

    @property
    def interpreters(self) -> int:
        """How many interpreters a per-thread pool may grow to: workers, at most the CPUs."""
        return max(1, min(self.workers, available_cpus()))


def available_cpus() -> int:
    """CPUs this process may use: its affinity set, capped by a cgroup CPU quota (v2 or v1).
    More interpreters than CPUs run no faster and only cost memory."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", lambda t: t.split()),
                        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None)):
        try:
            with open(path) as f:
                text = f.read()
            if parse:
                quota, period = parse(text)
            else:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    quota, period = text.strip(), f.read().strip()
            if quota not in ("max", "-1") and int(period) > 0:
                n = min(n, max(1, -(-int(quota) // int(period))))
            break
        except (OSError, ValueError):
            continue
    return n
