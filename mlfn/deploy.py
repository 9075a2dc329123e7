"""The command layer shared by every target: deploy, versions, status, traffic, promote,
rollback, delete, invoke, render. Each function takes plain values (a Config, names,
weights) and a `TargetOptions`, talks to one `Target` (mlfn.targets.factory) and returns a
dataclass the CLI renders; nothing here knows about click or about which target it uses.

    from mlfn.deploy import TargetOptions, deploy, set_traffic, invoke
    out = deploy(cfg, TargetOptions(target="local"), alias="canary", weight=10)
    set_traffic("digits", {"v1": 90, "v2": 10}, alias="default", options=TargetOptions("local"))
    invoke("digits@canary", {"image": "<base64>"}, options=TargetOptions("local"))
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mlfn.errors import ConfigError, MlfnError, TargetError
from mlfn.targets.base import DEFAULT_ALIAS, Alias, InvokeResult, Target, Version, VersionSpec
from mlfn.traffic import TrafficError, validate_weights, version_number

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


def open_target(cfg=None, options: Optional[TargetOptions] = None) -> Target:
    from mlfn.targets.factory import get_target

    o = options or TargetOptions()
    name = o.target or (cfg.deploy.target if cfg is not None else "local")
    common = {"dry_run": o.dry_run or None}
    if name == "local":
        return get_target(name, cfg, port=o.port, **common)
    if name == "openwhisk":
        return get_target(name, cfg, apihost=o.apihost, auth=o.auth, namespace=o.namespace,
                          insecure=o.insecure or None, **common)
    if name == "knative":
        return get_target(name, cfg, kubeconfig=o.kubeconfig, context=o.context, namespace=o.namespace,
                          host=o.host, **common)
    return get_target(name, cfg)  # raises the unknown-target error


def _requests(t: Target) -> list:
    rec = getattr(t, "recorder", None)
    return list(getattr(rec, "requests", []) or [])


def version_spec(cfg, build) -> VersionSpec:
    """What to publish for a BuildResult: the image by digest when it was pushed."""
    from mlfn import __version__

    image = build.repo_digest or build.image
    return VersionSpec(
        function=cfg.name, image=image, digest=build.digest, model_sha256=build.model_sha256,
        quantization=build.quantization, pipeline_hash=build.pipeline_hash, content_hash=build.content_hash,
        memory=cfg.deploy.memory, timeout=cfg.deploy.timeout, concurrency=cfg.deploy.concurrency,
        logs=cfg.deploy.logs, env=dict(cfg.deploy.env), labels={"mlfn": __version__},
    )


def split_for(new: str, weight: int, current: Optional[dict]) -> dict:
    """The alias assignment after giving `new` weight%: the rest is shared by the versions the
    alias routes to now, in proportion (largest remainder), e.g. {v1: 100} + v2=10 -> v1=90 v2=10."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise TrafficError(f"--weight {weight!r} must be a whole number from 0 to 100.")
    if weight == 100:
        return {new: 100}
    others = {v: w for v, w in (current or {}).items() if v != new and w > 0}
    if not others and (current or {}).get(new):
        raise TrafficError(f"The alias already routes only to {new}, so no other version would take the remaining "
                           f"{100 - weight}%; a canary needs new content (a new version), or drop --weight.")
    if not others:
        raise TrafficError(f"Nothing else routes the remaining {100 - weight}%; deploy without --weight, "
                           f"or use --weight 100 / --promote.")
    rest, total = 100 - weight, sum(others.values())
    shares = {v: rest * w // total for v, w in others.items()}
    remainders = sorted(others, key=lambda v: -(rest * others[v] % total))
    for v in remainders[: rest - sum(shares.values())]:
        shares[v] += 1
    out = {v: s for v, s in shares.items() if s > 0}
    out[new] = weight
    return validate_weights(out)


def deploy(cfg, options: Optional[TargetOptions] = None, *, alias: Optional[str] = None,
           weight: Optional[int] = None, promote: bool = False, push: Optional[str] = None,
           web: Optional[bool] = None, require_whisk_auth: Optional[bool] = None, build=None,
           progress: Progress = lambda m: None) -> DeployOutcome:
    """Build if needed, publish a new immutable version; move traffic only when asked.

    The first version of a function gets the default alias at 100%. Identical content
    (same content hash) creates no new version."""
    options = options or TargetOptions()
    if promote and weight is not None:
        raise ConfigError("--promote moves the alias to 100% of the new version; drop --weight (or --promote).")
    t = open_target(cfg, options)
    push = push or cfg.deploy.registry
    if t.name == "local" and push:
        progress(f"Pushing to {push} (the local target can also run the image straight from this Docker engine)")
    if build is None:
        from mlfn.image import build_image

        build = build_image(cfg, push=push if not options.dry_run else None, progress=progress)
    spec = version_spec(cfg, build)
    result = t.publish(spec, progress=progress)
    version = result.version
    aliases = result.aliases
    ow = cfg.deploy.openwhisk
    web = ow.web if web is None else web
    require_whisk_auth = ow.require_whisk_auth if require_whisk_auth is None else require_whisk_auth
    touched: Optional[Alias] = None
    extra = {"require_whisk_auth": require_whisk_auth} if require_whisk_auth and t.name in ("local", "openwhisk") else {}
    if promote or weight is not None or alias is not None or web:
        target_alias = alias or DEFAULT_ALIAS
        current = {a.name: a for a in aliases}
        if promote or (alias is not None and weight is None):
            weights = {version.name: 100}
        elif weight is not None:
            base = current.get(target_alias) or current.get(DEFAULT_ALIAS)
            weights = split_for(version.name, weight, base.weights if base else None)
        else:  # only --web: export the alias as it is (or create it on this version)
            weights = current[target_alias].weights if target_alias in current else {version.name: 100}
        progress(f"Routing alias '{target_alias}': {' '.join(f'{k}={v}' for k, v in weights.items())}")
        touched = t.set_traffic(cfg.name, target_alias, weights, web=web or None, **extra)
        aliases = [a for a in aliases if a.name != target_alias] + [touched]
    return DeployOutcome(
        function=cfg.name, target=t.name, version=version, created=result.created, image=spec.image,
        aliases=sorted(aliases, key=lambda a: a.name), dry_run=options.dry_run, requests=_requests(t),
        web_url=touched.web_url if touched else None, web_secret=getattr(t, "web_secret", None),
    )


def versions(function: str, options: Optional[TargetOptions] = None, cfg=None) -> list:
    return open_target(cfg, options).versions(function)


def status(function: str, options: Optional[TargetOptions] = None, cfg=None):
    return open_target(cfg, options).status(function)


@dataclass
class TrafficOutcome:
    function: str
    alias: Alias
    dry_run: bool = False
    requests: list = field(default_factory=list)
    web_secret: Optional[str] = None


def set_traffic(function: str, weights: dict, alias: str = DEFAULT_ALIAS, options: Optional[TargetOptions] = None,
                cfg=None, web: Optional[bool] = None) -> TrafficOutcome:
    t = open_target(cfg, options)
    a = t.set_traffic(function, alias or DEFAULT_ALIAS, validate_weights(dict(weights)), web=web)
    return TrafficOutcome(function, a, bool(options and options.dry_run), _requests(t), getattr(t, "web_secret", None))


def promote(function: str, version: str, alias: str = DEFAULT_ALIAS, options: Optional[TargetOptions] = None,
            cfg=None) -> TrafficOutcome:
    version_number(version)
    t = open_target(cfg, options)
    a = t.promote(function, version, alias or DEFAULT_ALIAS)
    return TrafficOutcome(function, a, bool(options and options.dry_run), _requests(t))


def rollback(function: str, alias: str = DEFAULT_ALIAS, options: Optional[TargetOptions] = None,
             cfg=None) -> TrafficOutcome:
    t = open_target(cfg, options)
    a = t.rollback(function, alias or DEFAULT_ALIAS)
    return TrafficOutcome(function, a, bool(options and options.dry_run), _requests(t))


@dataclass
class DeleteOutcome:
    function: str
    deleted: list
    dry_run: bool = False
    requests: list = field(default_factory=list)


def delete(function: str, version: Optional[str] = None, force: bool = False,
           options: Optional[TargetOptions] = None, cfg=None) -> DeleteOutcome:
    if version is not None:
        version_number(version)
    t = open_target(cfg, options)
    return DeleteOutcome(function, t.delete(function, version, force=force), bool(options and options.dry_run),
                         _requests(t))


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
           timeout: float = 120.0) -> InvokeResult:
    """Call a deployed function through an alias or one version; says which version served."""
    name, alias, version = parse_ref(ref)
    return open_target(cfg, options).invoke(name, payload, alias=alias, version=version, timeout=timeout)


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
           progress: Progress = lambda m: None) -> list:
    """Write the target's own manifests (wskdeploy manifest.yaml, Knative Service YAML)."""
    options = options or TargetOptions()
    o = TargetOptions(**{**options.__dict__, "dry_run": True})
    t = open_target(cfg, o)
    if image:
        check_image_ref(image)
        spec = VersionSpec(function=cfg.name, image=image, digest=image.partition("@")[2], model_sha256="",
                           quantization=cfg.quantize.mode, pipeline_hash="", content_hash="",
                           memory=cfg.deploy.memory, timeout=cfg.deploy.timeout,
                           concurrency=cfg.deploy.concurrency, logs=cfg.deploy.logs, env=dict(cfg.deploy.env))
    else:
        from mlfn.image import build_image

        spec = version_spec(cfg, build_image(cfg, push=cfg.deploy.registry, progress=progress))
    try:
        return t.render(spec, out_dir)
    except NotImplementedError as e:
        raise TargetError(str(e)) from None


__all__ = ["TargetOptions", "DeployOutcome", "TrafficOutcome", "DeleteOutcome", "open_target", "deploy",
           "versions", "status", "set_traffic", "promote", "rollback", "delete", "invoke", "render", "parse_ref",
           "split_for", "version_spec", "MlfnError"]
