"""Serving settings: function.json's `serving`, overridden by `MLFN_SERVING_<KEY>`
environment variables, with the defaults written here once; and the CPUs this process
may use (which caps the per-thread interpreter pool).

Connection and OpenWhisk settings (see actions/README.md, "Connections and deadlines"):
`header_timeout_seconds`, `body_timeout_seconds` (reading the body and writing the answer),
`idle_timeout_seconds` (keep-alive), `max_connections`, `drain_seconds` (SIGTERM);
`openwhisk` (serve /init and /run; default: on, off when K_SERVICE says Knative runs us),
`code_actions` (run code sent to /init; off unless an init token is set too:
`MLFN_INIT_TOKEN` in the environment or its SHA-256 in `init_token_sha256`).
`batching` (server-side batching, `mlfn_runtime.batching.BatchSettings`; its environment
variables are `MLFN_SERVING_BATCHING_<KEY>`)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional

from mlfn_runtime.batching import BatchSettings
from mlfn_runtime.errors import ConfigurationError
from mlfn_runtime.interpreter import check_interpreter_mode

FUNCTION_FILE = "function.json"
INIT_TOKEN_ENV = "MLFN_INIT_TOKEN"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass
class Serving:
    max_batch_size: int = 32
    max_payload_bytes: int = 1048576
    interpreter: str = "per-thread"  # per-thread | lock (see bench/runtime_bench.py)
    num_threads: int = 1
    workers: int = 8
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 120.0
    max_connections: int = 256
    drain_seconds: float = 20.0
    openwhisk: Optional[bool] = None  # None: auto (off on Knative, i.e. when K_SERVICE is set)
    code_actions: bool = False
    init_token_sha256: str = ""
    batching: BatchSettings = field(default_factory=BatchSettings)

    @classmethod
    def from_dict(cls, data: Optional[dict], environ: Optional[dict] = None) -> "Serving":
        """function.json's `serving` (None: the defaults), overridden by `MLFN_SERVING_<KEY>`
        environment variables (e.g. MLFN_SERVING_INTERPRETER=per-thread) so a deployment can
        tune a built image without rebuilding it."""
        data = dict(data or {})
        env = os.environ if environ is None else environ
        out = cls()
        batching = data.pop("batching", None)
        for key in vars(out):
            value = None if key == "batching" else env.get("MLFN_SERVING_" + key.upper())
            if value:
                data[key] = _from_env(key, value, getattr(out, key))
        for key, value in data.items():
            if hasattr(out, key):  # newer build sides may add keys; ignore what this runtime does not know
                setattr(out, key, _checked(key, value, getattr(out, key)))
        out.batching = BatchSettings.from_dict(batching, env, FUNCTION_FILE)
        check_interpreter_mode(out.interpreter, f"serving.interpreter in {FUNCTION_FILE}")
        if out.init_token_sha256 and not _is_sha256(out.init_token_sha256):
            raise ConfigurationError(f"serving.init_token_sha256 in {FUNCTION_FILE} must be 64 hex digits (a SHA-256).")
        if env.get(INIT_TOKEN_ENV):
            out.init_token_sha256 = hashlib.sha256(env[INIT_TOKEN_ENV].encode()).hexdigest()
        if out.code_actions and not out.init_token_sha256:
            raise ConfigurationError(
                f"serving.code_actions is on but no init token is set; set {INIT_TOKEN_ENV} (or "
                f"serving.init_token_sha256) so that only the platform can send code to /init.")
        out.openwhisk = out.serves_openwhisk(env)
        return out

    def serves_openwhisk(self, environ: Optional[dict] = None) -> bool:
        """Whether /init and /run are served: `openwhisk`, or when unset (auto) everywhere
        but on Knative (which sets K_SERVICE and never sends /init)."""
        if self.openwhisk is not None:
            return self.openwhisk
        return not (os.environ if environ is None else environ).get("K_SERVICE")

    @property
    def interpreters(self) -> int:
        """How many interpreters a per-thread pool may grow to: workers, at most the CPUs."""
        return max(1, min(self.workers, available_cpus()))


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower())


def _from_env(key: str, value: str, default):
    """An `MLFN_SERVING_<KEY>` string as the type of the setting's default."""
    name = f"MLFN_SERVING_{key.upper()}"
    text = value.strip().lower()
    if isinstance(default, bool) or key == "openwhisk":
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        if key == "openwhisk" and text == "auto":
            return None
        raise ConfigurationError(f"{name} must be true or false, not {value!r}.")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ConfigurationError(f"{name} must be {kind}, not {value!r}.") from None
    return value


def _checked(key: str, value, default):
    """`value` for serving.`key` when it has the default's type (positive for numbers)."""
    where = f"serving.{key} in {FUNCTION_FILE}"
    if isinstance(default, bool) or key == "openwhisk":
        if value is None and key == "openwhisk" or isinstance(value, bool):
            return value
        raise ConfigurationError(f"{where} must be true or false, not {value!r}.")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{where} must be a positive integer, not {value!r}.")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
            raise ConfigurationError(f"{where} must be a positive number of seconds, not {value!r}.")
        return float(value)
    elif not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a string, not {value!r}.")
    return value


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
