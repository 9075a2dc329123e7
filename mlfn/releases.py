"""The command layer shared by every target: deploy, versions, status, traffic, promote,
rollback, delete, invoke, render. Each function takes plain values (a Config, names,
weights) and a `TargetOptions`, talks to one `Target` (mlfn.targets.factory) and returns a
dataclass the CLI renders; nothing here knows about click or about which target it uses.
Each command opens the target and runs mlfn.lifecycle.Lifecycle on it (the alias policy of
mlfn.aliases); a dry run wraps the target's platform client with a Recorder, whose
requests come back in the outcomes.

    from mlfn.releases import TargetOptions, deploy, set_traffic, invoke
    out = deploy(cfg, TargetOptions(target="local"), alias="canary", weight=10)
    set_traffic("digits", {"v1": 90, "v2": 10}, alias="default", options=TargetOptions("local"))
    invoke("digits@canary", {"image": "<base64>"}, options=TargetOptions("local"))
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mlfn.aliases import split_for
from mlfn.errors import ConfigError, MlfnError
from mlfn.lifecycle import DeleteOutcome, Lifecycle, TrafficOutcome
from mlfn.targets.interface import DEFAULT_ALIAS, InvokeResult, Status, Target, Version, VersionSpec
from mlfn.targets.recording import Recorder
from mlfn.triggers import function_triggers, render_triggers, trigger_specs, unwire, wire
from mlfn.traffic import validate_weights, version_number

Progress = Callable[[str], None]


@dataclass
class TargetOptions:
    """Which target and how to reach it (flags; None = from mlfn.yaml / the environment)."""

    target: Optional[str] = None  # local | openwhisk | knative; default: deploy.target
    apihost: Optional[str] = None  # openwhisk
    auth: Optional[str] = field(default=None, repr=False)  # openwhisk; never printed
    namespace: Optional[str] = None  # openwhisk, knative
    insecure: bool = False  # openwhisk
    kubeconfig: Optional[str] = None  # knative
    context: Optional[str] = None  # knative
    host: Optional[str] = None  # knative: Host header / ingress override
    port: Optional[int] = None  # local
    dry_run: bool = False


@dataclass
class DeployOutcome:
    function: str
    target: str
    version: Optional[Version]
    created: bool
    image: str
    aliases: list = field(default_factory=list)  # list[Alias] after the deploy
    dry_run: bool = False
    requests: list = field(default_factory=list)  # what a dry run would send
    web_url: Optional[str] = None
    web_secret: Optional[str] = None  # a generated require-whisk-auth secret, shown once
    triggers: list = field(default_factory=list)  # [TriggerRecord] made by --trigger (mlfn.triggers)


def open_target(cfg=None, options: Optional[TargetOptions] = None, recorder: Optional[Recorder] = None) -> Target:
    """The target named by options (or mlfn.yaml); with a recorder, a dry run that records writes."""
    from mlfn.targets.factory import get_target

    o = options or TargetOptions()
    name = o.target or (cfg.deploy.target if cfg is not None else "local")
    return get_target(name, cfg, recorder=recorder, port=o.port, apihost=o.apihost, auth=o.auth,
                      namespace=o.namespace, insecure=o.insecure or None, kubeconfig=o.kubeconfig, context=o.context,
                      host=o.host)


def version_spec(cfg, build, planned_push: Optional[str] = None) -> VersionSpec:
    """What to publish for a BuildResult: the image by digest when it was pushed; a dry run
    that would push names the REGISTRY/REPO:TAG it would push to (`planned_push`)."""
    from mlfn import __version__

    image = build.repo_digest or build.image
    if planned_push and not build.repo_digest:
        from mlfn.image.docker_builder import parse_push_ref

        image = ":".join(parse_push_ref(planned_push, build.image.rsplit(":", 1)[-1]))
    return VersionSpec(
        function=cfg.name, image=image, digest=build.digest, model_sha256=build.model_sha256,
        quantization=build.quantization, pipeline_hash=build.pipeline_hash, content_hash=build.content_hash,
        memory=cfg.deploy.memory, timeout=cfg.deploy.timeout, concurrency=cfg.deploy.concurrency,
        logs=cfg.deploy.logs, env=dict(cfg.deploy.env), labels={"mlfn": __version__},
    )


def _recorded(lifecycle: Lifecycle) -> list:
    """Every request a dry run recorded (the lifecycle's and the triggers' beside it)."""
    return list(lifecycle.recorder.requests) if lifecycle.recorder else []


def _open(cfg, options: Optional[TargetOptions]) -> Lifecycle:
    options = options or TargetOptions()
    recorder = Recorder() if options.dry_run else None
    return Lifecycle(open_target(cfg, options, recorder), recorder)


def deploy(cfg, options: Optional[TargetOptions] = None, *, alias: Optional[str] = None,
           weight: Optional[int] = None, promote: bool = False, push: Optional[str] = None,
           web: Optional[bool] = None, require_whisk_auth: Optional[bool] = None, build=None,
           triggers: tuple = (), feed: Optional[str] = None, feed_params: tuple = (),
           progress: Progress = lambda m: None) -> DeployOutcome:
    """Build if needed, publish a new immutable version; move traffic only when asked.

    The first version of a function gets the default alias at 100%. Identical content
    (same content hash) creates no new version."""
    options = options or TargetOptions()
    if promote and weight is not None:
        raise ConfigError("--promote moves the alias to 100% of the new version; drop --weight (or --promote).")
    specs = trigger_specs(triggers, feed, feed_params)
    lifecycle = _open(cfg, options)
    if build is None:
        from mlfn.image import build_image

        lifecycle.target.check_image(push or cfg.deploy.registry or f"mlfn/{cfg.name}")  # before a minute of build
        build = build_image(cfg, push=None if options.dry_run else push or cfg.deploy.registry, progress=progress)
    spec = version_spec(cfg, build, planned_push=(push or cfg.deploy.registry) if options.dry_run else None)
    ow = cfg.deploy.openwhisk
    out = lifecycle.publish(spec, alias=alias, weight=weight, promote=promote, web=ow.web if web is None else web,
                          require_auth=bool(ow.require_whisk_auth if require_whisk_auth is None
                                            else require_whisk_auth), progress=progress)
    wired = wire(lifecycle.target, cfg.name, alias, specs, progress)
    return DeployOutcome(
        function=cfg.name, target=lifecycle.target.name, version=out.version, created=out.created, image=spec.image,
        aliases=out.aliases, dry_run=options.dry_run, requests=_recorded(lifecycle) if specs else out.requests,
        web_url=out.touched.web_url if out.touched else None, web_secret=out.web_secret, triggers=wired,
    )


def versions(function: str, options: Optional[TargetOptions] = None, cfg=None) -> list:
    return _open(cfg, options).versions(function)


def status(function: str, options: Optional[TargetOptions] = None, cfg=None) -> Status:
    lifecycle = _open(cfg, options)
    st = lifecycle.status(function)
    return dataclasses.replace(st, triggers=function_triggers(lifecycle.target, function))


def set_traffic(function: str, weights: dict, alias: str = DEFAULT_ALIAS, options: Optional[TargetOptions] = None,
                cfg=None, web: Optional[bool] = None) -> TrafficOutcome:
    return _open(cfg, options).set_traffic(function, alias, validate_weights(dict(weights)), web=web)


def promote(function: str, version: str, alias: str = DEFAULT_ALIAS, options: Optional[TargetOptions] = None,
            cfg=None) -> TrafficOutcome:
    version_number(version)
    return _open(cfg, options).promote(function, version, alias)


def rollback(function: str, alias: str = DEFAULT_ALIAS, options: Optional[TargetOptions] = None,
             cfg=None) -> TrafficOutcome:
    return _open(cfg, options).rollback(function, alias)


def delete(function: str, version: Optional[str] = None, force: bool = False,
           options: Optional[TargetOptions] = None, cfg=None) -> DeleteOutcome:
    if version is not None:
        version_number(version)
    lifecycle = _open(cfg, options)
    gone = [] if version is not None else unwire(lifecycle.target, function)  # triggers first: no rule left dangling
    out = lifecycle.delete(function, version, force=force)
    return dataclasses.replace(out, deleted=[f"trigger {t}" for t in gone] + out.deleted,
                               requests=_recorded(lifecycle))


_REF = re.compile(r"^(?P<name>[\w][\w.-]*)(?:@(?P<alias>[\w][\w.-]*)|:(?P<version>v[0-9]+))?$")


def parse_ref(ref: str) -> tuple:
    """'digits' -> (digits, None, None); 'digits@canary' -> alias; 'digits:v3' -> version."""
    m = _REF.match(ref or "")
    if not m:
        raise ConfigError(f"'{ref}' is not a function reference; use NAME, NAME@ALIAS or NAME:vN.")
    if m.group("version"):
        version_number(m.group("version"))
    return m.group("name"), m.group("alias"), m.group("version")


def invoke(ref: str, payload: Any, options: Optional[TargetOptions] = None, cfg=None,
           timeout: float = 120.0, protocol: str = "predict") -> InvokeResult:
    """Call a deployed function through an alias or one version; says which version served.
    `protocol` "grpc": OIP ModelInfer (Knative with serving.grpc; OpenWhisk refuses)."""
    name, alias, version = parse_ref(ref)
    return open_target(cfg, options).invoke(name, payload, alias=alias, version=version, timeout=timeout,
                                            protocol=protocol)


@dataclass
class InvokeSummary:
    """`mlfn invoke --repeat N`: which versions served N calls, and how fast."""

    calls: int
    served: dict  # {"v1": 181, "v2": 19}
    share: dict  # {"v1": 0.905, "v2": 0.095}
    latency_ms_p50: float
    latency_ms_p90: float
    last: InvokeResult


def invoke_repeated(ref: str, payload: Any, n: int, options: Optional[TargetOptions] = None, cfg=None,
                    timeout: float = 120.0) -> InvokeSummary:
    """Invoke n times and count the serving version (to watch a canary split)."""
    import statistics
    import time

    served: dict = {}
    times = []
    res = None
    for _ in range(n):
        t0 = time.perf_counter()
        res = invoke(ref, payload, options=options, cfg=cfg, timeout=timeout)
        times.append((time.perf_counter() - t0) * 1000)
        key = res.version or "?"
        served[key] = served.get(key, 0) + 1
    served = dict(sorted(served.items(), key=lambda kv: (len(kv[0]), kv[0])))
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return InvokeSummary(calls=n, served=served, share={k: round(v / n, 3) for k, v in served.items()},
                         latency_ms_p50=round(statistics.median(times), 2), latency_ms_p90=round(q[8], 2), last=res)


_IMAGE_REF = re.compile(
    r"(?:(?:(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost)(?::[0-9]+)?|[A-Za-z0-9-]+:[0-9]+)/)?"  # registry
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # repository
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")  # tag, digest


def check_image_ref(image: str) -> str:
    """An image reference a platform can pull: [REGISTRY/]REPO[:TAG][@sha256:DIGEST]."""
    if not _IMAGE_REF.fullmatch(image or ""):
        raise ConfigError(f"--image {image!r} is not an image reference; use [REGISTRY/]REPO[:TAG][@sha256:DIGEST] "
                          "with a lower-case repository.")
    return image


def render(cfg, out_dir: str, options: Optional[TargetOptions] = None, image: Optional[str] = None,
           progress: Progress = lambda m: None, triggers: tuple = (), api: Optional[str] = None) -> list:
    """Write the target's own manifests (wskdeploy manifest.yaml, Knative Service YAML and
    a Trigger YAML per --trigger); with `api` (a base path) only the API gateway
    configuration (OpenWhisk: api.json)."""
    t = open_target(cfg, options, Recorder())  # rendering sends nothing to the platform
    if api:
        return t.render_api(cfg.name, api, out_dir)
    specs = trigger_specs(triggers)
    if image:
        check_image_ref(image)
        spec = VersionSpec(function=cfg.name, image=image, digest=image.partition("@")[2], model_sha256="",
                           quantization=cfg.quantize.mode, pipeline_hash="", content_hash="",
                           memory=cfg.deploy.memory, timeout=cfg.deploy.timeout,
                           concurrency=cfg.deploy.concurrency, logs=cfg.deploy.logs, env=dict(cfg.deploy.env))
    else:
        from mlfn.image import build_image

        t.check_image(cfg.deploy.registry or f"mlfn/{cfg.name}")  # refused before a minute of build
        spec = version_spec(cfg, build_image(cfg, push=cfg.deploy.registry, progress=progress))
    trigger_files = render_triggers(t, cfg.name, None, specs, out_dir)  # first: a refusal writes nothing
    return t.render(spec, out_dir) + trigger_files


__all__ = ["TargetOptions", "DeployOutcome", "TrafficOutcome", "DeleteOutcome", "open_target", "deploy",
           "versions", "status", "set_traffic", "promote", "rollback", "delete", "invoke", "render", "parse_ref",
           "split_for", "version_spec", "MlfnError"]
