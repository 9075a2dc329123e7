"""Settings of the event features, from function.json (written by the build side from
mlfn.yaml) and overridable by environment variables at start-up, like `serving`:

- `serving.events.reply` (`MLFN_EVENTS_REPLY`): answer a CloudEvent with a
  `dev.mlfn.inference.response` event (true) or with 202 and no body (false);
- `logging.sink` (`MLFN_LOGGING_SINK`), `logging.sample_rate` (`MLFN_LOGGING_SAMPLE_RATE`),
  `logging.payload` (`MLFN_LOGGING_PAYLOAD`: full | metadata): payload logging.

The function's version (the CloudEvent `source`, the log events' extension) is what the
platform tells the container: `MLFN_VERSION` (OpenWhisk: an /init parameter), else
Knative's revision name without the service prefix, else "unversioned"; it is read when
used, after /init."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from mlfn_runtime.errors import ConfigurationError
from mlfn_runtime.serving import FUNCTION_FILE

PAYLOAD_MODES = ("full", "metadata")


@dataclass(frozen=True)
class EventSettings:
    reply: bool = True


@dataclass(frozen=True)
class LoggingSettings:
    sink: Optional[str] = None
    sample_rate: float = 1.0
    payload: str = "full"


def function_version() -> str:
    """`MLFN_VERSION`, else the Knative revision (`digits-v3` of service `digits` is `v3`)."""
    if os.environ.get("MLFN_VERSION"):
        return os.environ["MLFN_VERSION"]
    revision, service = os.environ.get("K_REVISION") or "", os.environ.get("K_SERVICE") or ""
    if service and revision.startswith(service + "-"):
        return revision[len(service) + 1:]
    return revision or "unversioned"


def read_settings(function_dir: Optional[str], environ: Optional[dict] = None) -> tuple:
    """(EventSettings, LoggingSettings) of the function in `function_dir` (None: defaults)."""
    env = os.environ if environ is None else environ
    spec = _read_spec(function_dir)
    events = (spec.get("serving") or {}).get("events") or {}
    logging = spec.get("logging") or {}
    reply = _flag(env.get("MLFN_EVENTS_REPLY"), events.get("reply", True), "serving.events.reply")
    sink = env.get("MLFN_LOGGING_SINK") or logging.get("sink")
    rate = env.get("MLFN_LOGGING_SAMPLE_RATE") or logging.get("sample_rate", 1.0)
    payload = env.get("MLFN_LOGGING_PAYLOAD") or logging.get("payload", "full")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ConfigurationError(f"logging.sample_rate must be a number between 0 and 1, not {rate!r}.") from None
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError(f"logging.sample_rate must be between 0 and 1, not {rate}.")
    if payload not in PAYLOAD_MODES:
        raise ConfigurationError(f"logging.payload must be one of {', '.join(PAYLOAD_MODES)}, not {payload!r}.")
    if sink is not None and not str(sink).startswith(("http://", "https://")):
        raise ConfigurationError(f"logging.sink must be an http:// or https:// URL, not {sink!r}.")
    return EventSettings(reply=reply), LoggingSettings(sink=sink or None, sample_rate=rate, payload=payload)


def _flag(env_value: Optional[str], value, key: str) -> bool:
    if env_value:
        if env_value.lower() not in ("true", "false", "1", "0"):
            raise ConfigurationError(f"MLFN_EVENTS_REPLY must be true or false, not {env_value!r}.")
        return env_value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} in {FUNCTION_FILE} must be true or false, not {value!r}.")
    return value


def _read_spec(function_dir: Optional[str]) -> dict:
    if not function_dir:
        return {}
    try:
        with open(os.path.join(function_dir, FUNCTION_FILE), encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return {}  # load_function has read it already and reports what is wrong with it
    return spec if isinstance(spec, dict) else {}
