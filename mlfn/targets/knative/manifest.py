"""The Knative Service mlfn renders for a version (templates/knative/service.yaml.j2 holds
the layout; every value is computed here), and the plan of a publish: which manifest the
next version needs. How versions and aliases map onto the Service: codec.py.
"""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Optional

from mlfn.errors import ConfigError
from mlfn.targets.interface import VersionSpec
from mlfn.targets.knative.codec import (ANN_HISTORY, ANN_LAST, PREFIX, VERSION_FIELDS, Routing, now_iso,
                                        revision_name, version_of)

GROUP = "serving.knative.dev"
API_VERSION = "v1"
SERVICES = "services"
REVISIONS = "revisions"

PORT = 8080
HEALTH_PATH = "/v2/health/ready"

LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_VERSION = PREFIX + "version"
LABEL_FUNCTION = PREFIX + "function"
LABEL_KN_SERVICE = "serving.knative.dev/service"

RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")

_ANN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- rendering


def _annotation_key(name: str) -> str:
    return PREFIX + (_ANN_NAME.sub("-", str(name)).strip("-._")[:63] or "x")


def container_env(env: dict, where: str = "deploy.env") -> list:
    out = []
    for name, value in (env or {}).items():
        if name in RESERVED_ENV:
            raise ConfigError(
                f"{where}.{name} is reserved by Knative (it sets {', '.join(RESERVED_ENV)} itself); "
                "rename the variable."
            )
        if not re.match(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", str(name)):
            raise ConfigError(f"{where}.{name} is not a valid environment variable name.")
        out.append((str(name), "" if value is None else str(value)))
    return out


def autoscaling_annotations(kn) -> dict:
    """`spec.template.metadata.annotations` for the autoscaler, from deploy.knative."""
    ann = {
        "autoscaling.knative.dev/class": kn.autoscaling_class,
        "autoscaling.knative.dev/metric": kn.metric,
        "autoscaling.knative.dev/min-scale": str(kn.min_scale),
    }
    if kn.max_scale:
        ann["autoscaling.knative.dev/max-scale"] = str(kn.max_scale)
    if kn.target is not None:
        ann["autoscaling.knative.dev/target"] = str(kn.target)
    return ann


def _check_limits(kn, spec, timeout: int) -> None:
    """The Knative defaults a user is most likely to cross, named by their mlfn.yaml key."""
    from mlfn.targets.knative.validate import MAX_CONTAINER_CONCURRENCY, MAX_TIMEOUT_SECONDS

    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        key = "deploy.knative.timeout_seconds" if kn.timeout_seconds is not None else "deploy.timeout (ms)"
        raise ConfigError(f"{key} gives a request timeout of {timeout} s; Knative allows 1 to "
                          f"{MAX_TIMEOUT_SECONDS} s (max-revision-timeout-seconds).")
    if not 0 <= int(spec.concurrency) <= MAX_CONTAINER_CONCURRENCY:
        raise ConfigError(f"deploy.concurrency is {spec.concurrency}; Knative allows 0 (unlimited) to "
                          f"{MAX_CONTAINER_CONCURRENCY} requests per container.")
    if int(spec.memory) <= 0:
        raise ConfigError(f"deploy.memory is {spec.memory}; give the container's memory in MB, e.g. 256.")
    if kn.min_scale < 0 or kn.max_scale < 0 or (kn.max_scale and kn.max_scale < kn.min_scale):
        raise ConfigError(f"deploy.knative.max_scale ({kn.max_scale}) must be 0 (unlimited) or at least "
                          f"deploy.knative.min_scale ({kn.min_scale}), and neither may be negative.")


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    from mlfn.targets.knative.validate import template_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("service.yaml.j2")


AUTH_MOUNT = "/var/run/mlfn/auth"  # mlfn_runtime.auth reads keys.json here


KEYS_FILE = "keys.json"


def auth_secret_name(cfg, function: Optional[str] = None) -> str:
    """The Secret holding the function's key set (`keys.json`), mounted by reference: the
    manifest names it, never holds it. Optional, so a function whose keys were never
    created starts and refuses every protected route."""
    return cfg.auth.secret or f"{function or cfg.name}-mlfn-auth"


def key_set_secret(name: str, function: str, key_set: dict) -> dict:
    import base64

    data = base64.b64encode(json.dumps(key_set, sort_keys=True).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": {LABEL_MANAGED: "mlfn", LABEL_FUNCTION: function}},
            "data": {KEYS_FILE: data}}


def key_set_of_secret(secret: Optional[dict]) -> dict:
    import base64

    raw = ((secret or {}).get("data") or {}).get(KEYS_FILE)
    return json.loads(base64.b64decode(raw)) if raw else {"keys": []}


def render_service(cfg, spec, number: int, *, namespace: Optional[str], traffic: list,
                   service_annotations: Optional[dict] = None, created: Optional[str] = None) -> dict:
    """The Service manifest (a dict) for version `number` of spec, with the given traffic."""
    import yaml

    kn = cfg.deploy.knative
    service = spec.function
    timeout = kn.timeout_seconds if kn.timeout_seconds is not None else max(1, math.ceil(spec.timeout / 1000))
    _check_limits(kn, spec, timeout)
    memory = f"{int(spec.memory)}Mi"
    requests = {"memory": memory}
    limits = {"memory": kn.memory_limit or memory}
    if kn.cpu:
        requests["cpu"] = kn.cpu
    if kn.cpu_limit:
        limits["cpu"] = kn.cpu_limit
    revision_labels = {
        LABEL_MANAGED: "mlfn",
        LABEL_FUNCTION: service,
        LABEL_VERSION: str(number),
    }
    revision_annotations = dict(autoscaling_annotations(kn))
    for key, value in sorted((spec.labels or {}).items()):
        revision_annotations[_annotation_key(key)] = str(value)
    revision_annotations.update(VERSION_FIELDS.encode({
        "content_hash": spec.content_hash, "model_sha256": spec.model_sha256, "quantization": spec.quantization,
        "pipeline_hash": spec.pipeline_hash, "digest": spec.digest, "created": created or now_iso()}))
    ann = dict(service_annotations or {})
    ann[ANN_LAST] = str(max(number, int(ann.get(ANN_LAST) or 0)))
    text = _template().render(
        service=service,
        namespace=namespace,
        service_labels={LABEL_MANAGED: "mlfn", LABEL_FUNCTION: service},
        service_annotations=ann,
        revision=revision_name(service, number),
        revision_labels=revision_labels,
        revision_annotations=revision_annotations,
        container_concurrency=int(spec.concurrency),
        timeout_seconds=int(timeout),
        image=spec.image,
        port=PORT,
        port_name="h2c" if cfg.serving.grpc else "http1",  # h2c: queue-proxy speaks HTTP/2 (gRPC and REST)
        env=container_env(spec.env),
        requests=requests,
        limits=limits,
        health_path=HEALTH_PATH,
        traffic=traffic,
        auth_secret=auth_secret_name(cfg) if cfg.auth.enabled else None,
        auth_mount=AUTH_MOUNT,
    )
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def template_content(obj: Optional[dict]) -> Optional[dict]:
    """spec.template without the per-render timestamp: two renders of the same version compare equal."""
    tpl = json.loads(json.dumps(((obj or {}).get("spec") or {}).get("template") or {}))
    ((tpl.get("metadata") or {}).get("annotations") or {}).pop(VERSION_FIELDS.key("created"), None)
    return tpl or None


def identity(spec: VersionSpec) -> VersionSpec:
    """spec with a content hash: specs made without one (`mlfn render --image ...`) are
    identified by what the revision would run."""
    if spec.content_hash:
        return spec
    import dataclasses
    import hashlib

    fields = [spec.image, spec.digest, spec.model_sha256, spec.quantization, spec.pipeline_hash, spec.memory,
              spec.timeout, spec.concurrency, sorted((spec.env or {}).items())]
    digest = hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()
    return dataclasses.replace(spec, content_hash=digest)


def plan_publish(cfg, spec: VersionSpec, existing: Optional[dict], revisions: list, namespace: Optional[str],
                 force_new: bool = False):
    """(manifest or None when the template already holds this content, version number).
    A new Service routes its default traffic to v1 (Knative needs a route). force_new: a
    new number even when the template holds this content (its revision failed)."""
    import copy

    spec = identity(spec)
    service = spec.function
    if existing is None:
        routing = Routing(default={revision_name(service, 1): 100})  # the tag v1 follows once it is ready
        return render_service(cfg, spec, 1, namespace=namespace, traffic=routing.to_traffic(),
                              service_annotations={ANN_HISTORY: "{}"}), 1
    meta = existing.get("metadata") or {}
    tpl = (existing.get("spec") or {}).get("template") or {}
    tpl_rev = (tpl.get("metadata") or {}).get("name") or ""
    routing = Routing.from_traffic(service, (existing.get("spec") or {}).get("traffic"))
    tpl_hash = ((tpl.get("metadata") or {}).get("annotations") or {}).get(VERSION_FIELDS.key("content_hash"))
    if tpl_hash == spec.content_hash and version_of(service, tpl_rev) and not force_new:
        return None, int(version_of(service, tpl_rev)[1:])
    numbers = [int(version_of(service, r["metadata"]["name"])[1:]) for r in revisions]
    if version_of(service, tpl_rev):
        numbers.append(int(version_of(service, tpl_rev)[1:]))
    try:
        numbers.append(int((meta.get("annotations") or {}).get(ANN_LAST) or 0))
    except ValueError:
        pass
    number = max(numbers, default=0) + 1
    manifest = render_service(cfg, spec, number, namespace=namespace or meta.get("namespace"),
                              traffic=routing.to_traffic(), service_annotations=meta.get("annotations") or {})
    # keep what the cluster (or the GitOps file) has beyond mlfn's own keys
    merged = copy.deepcopy(existing)
    merged.pop("status", None)
    merged.setdefault("metadata", {}).setdefault("annotations", {}).update(manifest["metadata"]["annotations"])
    merged["metadata"].setdefault("labels", {}).update(manifest["metadata"]["labels"])
    merged.setdefault("spec", {})["template"] = manifest["spec"]["template"]
    merged["spec"]["traffic"] = routing.to_traffic()
    return merged, number
