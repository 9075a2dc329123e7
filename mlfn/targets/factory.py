"""One place that turns a target name into a Target (ko's factory style).

    get_target("local", cfg)                       the embedded controller on 127.0.0.1:3233
    get_target("openwhisk", cfg, apihost=..., auth=..., namespace=..., insecure=...)
    get_target("knative", cfg, kubeconfig=..., context=..., namespace=..., host=...)

With `recorder` (mlfn.targets.recording.Recorder) the target is a dry run: its platform
client is wrapped so that writes are recorded there and never sent. Each backend is
imported lazily so `mlfn --help` stays fast and the kubernetes client is only needed for
knative. Options a target does not know are refused when set.
"""
from __future__ import annotations

from typing import Optional

from mlfn.config import TARGETS
from mlfn.errors import ConfigError
from mlfn.targets.interface import Target
from mlfn.targets.recording import Recorder

_OPTIONS = {
    "local": ("port",),
    "openwhisk": ("apihost", "auth", "namespace", "insecure"),
    "knative": ("kubeconfig", "context", "namespace", "host"),
}


def get_target(name: str, cfg=None, recorder: Optional[Recorder] = None, **options) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"Unknown target '{name}'; choose one of: {', '.join(TARGETS)}.")
    allowed = _OPTIONS[name]
    unknown = [k for k, v in options.items() if v not in (None, False) and k not in allowed]
    if unknown:
        raise ConfigError(f"Option(s) {', '.join('--' + k.replace('_', '-') for k in unknown)} do not apply to "
                          f"the {name} target.")
    kw = {k: v for k, v in options.items() if k in allowed and v is not None}
    if name == "local":
        from mlfn.targets.local.target import local_target

        return local_target(cfg, recorder=recorder, **kw)
    if name == "openwhisk":
        from mlfn.targets.openwhisk.target import openwhisk_target

        return openwhisk_target(cfg, recorder=recorder, **kw)
    from mlfn.targets.knative.target import knative_target

    return knative_target(cfg, recorder=recorder, **kw)
