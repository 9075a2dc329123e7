"""Check a Knative Service manifest before anything is sent to a cluster.

Two layers, because the CRD schema does not carry Knative's admission rules:
1. the `openAPIV3Schema` of `services.serving.knative.dev` (templates/knative/service-crd.yaml,
   a verbatim copy of knative/serving's CRD), read strictly: a field the schema does not
   know is an error (like `kubectl --validate=strict`), except under
   `x-kubernetes-preserve-unknown-fields`; `x-kubernetes-list-type: map|set` keys must be unique;
2. the webhook rules (knative.dev/serving `pkg/apis/serving/v1` validation; see
   docs/architecture.md, "Knative"): traffic, BYO revision names, one container port, reserved
   environment names, autoscaling annotations, container concurrency and timeout ranges.

Every violation is a ManifestError naming the field path, e.g.
`spec.traffic[1].percent: traffic percents sum to 90, not 100`.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Optional

from mlfn.errors import TargetError

MAX_CONTAINER_CONCURRENCY = 1000  # Knative's default config-defaults container-concurrency-max-limit
MAX_TIMEOUT_SECONDS = 600  # Knative's default max-revision-timeout-seconds
RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
AUTOSCALING = "autoscaling.knative.dev/"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(TargetError):
    """A manifest the cluster (schema or Knative's webhook) would reject."""

    exit_code = 2


def template_dir() -> Path:
    """templates/knative (installed as the package data mlfn.templates/knative)."""
    import importlib.util

    spec = importlib.util.find_spec("mlfn.templates")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "knative"
    return Path(__file__).resolve().parents[3] / "templates" / "knative"


@functools.lru_cache(maxsize=1)
def service_schema() -> dict:
    """The Service CRD's openAPIV3Schema, made strict for jsonschema."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((template_dir() / "service-crd.yaml").read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


@functools.lru_cache(maxsize=1)
def trigger_schema() -> dict:
    """The Knative Eventing Trigger CRD's openAPIV3Schema (templates/knative/trigger-crd.yaml,
    a verbatim copy of knative/eventing's), made strict for jsonschema."""
    import yaml

    crd = yaml.safe_load((template_dir() / "trigger-crd.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # the fields Kubernetes adds to every custom resource's schema
    schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                            "metadata": {"type": "object"}, **schema["properties"]}
    return _strict(schema)


def validate_trigger(manifest: dict) -> dict:
    """A Trigger against the CRD schema, plus what Eventing's webhook requires of mlfn's:
    a broker, a subscriber with a ref or a URI, string filter attributes."""
    import jsonschema

    name = ((manifest.get("metadata") or {}).get("name")) if isinstance(manifest, dict) else ""
    errors = sorted(jsonschema.Draft7Validator(trigger_schema()).iter_errors(manifest),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    where = f" (Knative trigger {name})"
    if errors:
        e, path = errors[0], list(errors[0].absolute_path)
        extra = sorted(set((e.instance or {}).keys()) - set(e.schema.get("properties", {}))) \
            if e.validator == "additionalProperties" else []
        message = f"unknown field '{extra[0]}' (not in the Knative Trigger schema)" if extra else e.message
        raise ManifestError(f"{_path(path + extra[:1])}: {message}{where}.")
    spec = manifest.get("spec") or {}
    if not spec.get("broker"):
        raise ManifestError(f"spec.broker: a trigger needs a broker{where}.")
    subscriber = spec.get("subscriber") or {}
    if not subscriber.get("ref") and not subscriber.get("uri"):
        raise ManifestError(f"spec.subscriber: needs a ref or a uri{where}.")
    for key, value in ((spec.get("filter") or {}).get("attributes") or {}).items():
        if not isinstance(value, str):
            raise ManifestError(f"spec.filter.attributes.{key}: must be a string{where}.")
    if not _DNS1123.match(name or "") or len(name) > 63:
        raise ManifestError(f"metadata.name: {name!r} is not a DNS-1123 label{where}.")
    return manifest


def _strict(node):
    if isinstance(node, dict):
        node.pop("description", None)
        if (node.get("type") == "object" and "properties" in node
                and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for key, value in node.items():
            if key in ("properties", "patternProperties"):
                for v in value.values():
                    _strict(v)
            elif isinstance(value, (dict, list)):
                _strict(value)
    elif isinstance(node, list):
        for item in node:
            _strict(item)
    return node


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the manifest)"


def _fail(path, message: str, name: str = "") -> None:
    where = f" (Knative service {name})" if name else ""
    raise ManifestError(f"{_path(path) if not isinstance(path, str) else path}: {message}{where}.")


def validate_schema(manifest: dict) -> None:
    """Against the CRD's openAPIV3Schema (jsonschema, strict about unknown fields)."""
    try:
        import jsonschema
    except ImportError:
        raise TargetError(
            "Validating Knative manifests needs jsonschema; install it with: pip install 'mlfn[knative]'."
        ) from None

    schema = service_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(manifest),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    name = ((manifest.get("metadata") or {}).get("name")) if isinstance(manifest, dict) else ""
    if errors:
        e = errors[0]
        msg = e.message
        if e.validator == "additionalProperties":
            extra = sorted(set((e.instance or {}).keys()) - set(e.schema.get("properties", {})))
            path = list(e.absolute_path)
            if extra:
                path.append(extra[0])
                msg = f"unknown field '{extra[0]}' (not in the Knative Service schema)"
            _fail(path, msg, name)
        _fail(list(e.absolute_path), msg, name)
    _check_list_types(manifest, schema, [], name)


def _check_list_types(value, schema: dict, path: list, name: str) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub:
                _check_list_types(v, sub, path + [k], name)
    elif isinstance(value, list):
        kind = schema.get("x-kubernetes-list-type")
        if kind == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = {}
            for i, item in enumerate(value):
                key = tuple((item or {}).get(k) for k in keys) if isinstance(item, dict) else (item,)
                if key in seen:
                    _fail(path + [i], f"duplicate entry {'/'.join(map(str, key))} (also at index {seen[key]})", name)
                seen[key] = i
        elif kind == "set":
            seen_json = {}
            for i, item in enumerate(value):
                k = json.dumps(item, sort_keys=True)
                if k in seen_json:
                    _fail(path + [i], f"duplicate entry {item!r}", name)
                seen_json[k] = i
        for i, item in enumerate(value):
            _check_list_types(item, schema.get("items") or {}, path + [i], name)


def validate_webhook(manifest: dict, existing: Optional[dict] = None) -> None:
    """Knative's admission rules for a Service (create, or update of `existing`)."""
    meta = manifest.get("metadata") or {}
    name = meta.get("name") or ""
    if manifest.get("apiVersion") != "serving.knative.dev/v1" or manifest.get("kind") != "Service":
        _fail("apiVersion", "must be serving.knative.dev/v1 with kind Service", name)
    if not name or len(name) > 63 or not _DNS1035.match(name):
        _fail("metadata.name", f"'{name}' must be a DNS-1035 label (lower-case letters, digits, '-', starting with "
              "a letter, at most 63 characters)")
    for section in ("labels", "annotations"):
        for key, value in (meta.get(section) or {}).items():
            if not isinstance(value, str):
                _fail(f"metadata.{section}.{key}", "must be a string")
    spec = manifest.get("spec") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    rev = tmeta.get("name")
    if rev is not None:
        if not rev.startswith(name + "-"):
            _fail("spec.template.metadata.name", f"revision name '{rev}' must start with '{name}-'", name)
        if len(rev) > 63 or not _DNS1123.match(rev):
            _fail("spec.template.metadata.name", f"'{rev}' must be a DNS-1123 label of at most 63 characters", name)
    if existing is not None:
        old_tpl = (existing.get("spec") or {}).get("template") or {}
        old_name = (old_tpl.get("metadata") or {}).get("name")
        if rev and old_name == rev and _comparable(old_tpl) != _comparable(template):
            _fail("spec.template.metadata.name", f"the template changed but the revision name '{rev}' did not; "
                  "a changed template needs a new revision name", name)
    _check_pod(template.get("spec") or {}, name)
    _check_autoscaling(tmeta.get("annotations") or {}, name)
    if "traffic" in spec:
        _check_traffic(spec.get("traffic") or [], name)


def _comparable(template: dict) -> dict:
    t = copy.deepcopy(template)
    ann = (t.get("metadata") or {}).get("annotations") or {}
    ann.pop("mlfn.dev/created", None)
    return t


def _check_pod(pod: dict, name: str) -> None:
    base = "spec.template.spec"
    containers = pod.get("containers") or []
    if len(containers) != 1:
        _fail(f"{base}.containers", f"mlfn functions run exactly one container, found {len(containers)}", name)
    c = containers[0]
    if not c.get("image"):
        _fail(f"{base}.containers[0].image", "is required", name)
    ports = c.get("ports") or []
    if len(ports) > 1:
        _fail(f"{base}.containers[0].ports", f"Knative allows one container port, found {len(ports)}", name)
    for i, p in enumerate(ports):
        port = p.get("containerPort")
        if port is not None and (not 0 < port < 65536 or port in (8012, 8013, 8022, 9090, 9091)):
            _fail(f"{base}.containers[0].ports[{i}].containerPort",
                  f"{port} is not allowed (1-65535, and 8012, 8013, 8022, 9090, 9091 are Knative's own)", name)
        if p.get("name") not in (None, "", "http1", "h2c"):
            _fail(f"{base}.containers[0].ports[{i}].name", f"'{p.get('name')}' must be http1 or h2c", name)
    for i, e in enumerate(c.get("env") or []):
        if e.get("name") in RESERVED_ENV:
            _fail(f"{base}.containers[0].env[{i}].name",
                  f"{e['name']} is reserved by Knative ({', '.join(RESERVED_ENV)})", name)
    cc = pod.get("containerConcurrency")
    if cc is not None and not (0 <= cc <= MAX_CONTAINER_CONCURRENCY):
        _fail(f"{base}.containerConcurrency", f"{cc} must be from 0 to {MAX_CONTAINER_CONCURRENCY}", name)
    ts = pod.get("timeoutSeconds")
    if ts is not None and not (0 < ts <= MAX_TIMEOUT_SECONDS):
        _fail(f"{base}.timeoutSeconds", f"{ts} must be from 1 to {MAX_TIMEOUT_SECONDS}", name)


def _int_annotation(ann: dict, key: str, name: str, minimum: int = 0) -> Optional[int]:
    if key not in ann:
        return None
    try:
        value = int(ann[key])
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        _fail(f"spec.template.metadata.annotations.{key}", f"'{ann[key]}' must be an integer >= {minimum}", name)
    return value


def _check_autoscaling(ann: dict, name: str) -> None:
    where = "spec.template.metadata.annotations."
    cls = ann.get(AUTOSCALING + "class", KPA)
    if cls not in (KPA, HPA):
        _fail(where + AUTOSCALING + "class", f"'{cls}' must be {KPA} or {HPA}", name)
    lo = _int_annotation(ann, AUTOSCALING + "min-scale", name)
    hi = _int_annotation(ann, AUTOSCALING + "max-scale", name)
    if lo is not None and hi is not None and hi != 0 and hi < lo:
        _fail(where + AUTOSCALING + "max-scale", f"max-scale {hi} must be >= min-scale {lo}", name)
    if cls == HPA and lo == 0:
        _fail(where + AUTOSCALING + "min-scale", "the HPA class cannot scale to zero; use min-scale >= 1", name)
    metric = ann.get(AUTOSCALING + "metric")
    if metric is not None:
        allowed = ("concurrency", "rps") if cls == KPA else ("cpu", "memory")
        if metric not in allowed and not (cls == HPA and metric):
            _fail(where + AUTOSCALING + "metric", f"'{metric}' is not a {cls} metric; use {' or '.join(allowed)}", name)
    target = ann.get(AUTOSCALING + "target")
    if target is not None:
        try:
            ok = float(target) >= 0.01
        except ValueError:
            ok = False
        if not ok:
            _fail(where + AUTOSCALING + "target", f"'{target}' must be a number >= 0.01", name)


def _check_traffic(traffic: list, name: str) -> None:
    total = 0
    tags: dict = {}
    for i, t in enumerate(traffic):
        at = f"spec.traffic[{i}]"
        if "url" in t:
            _fail(f"{at}.url", "is set by Knative and not allowed in spec", name)
        if "configurationName" in t:
            _fail(f"{at}.configurationName", "is not allowed in a Service; use revisionName or latestRevision", name)
        latest = t.get("latestRevision")
        rev = t.get("revisionName")
        if rev and latest:
            _fail(f"{at}.latestRevision", "may not be true together with revisionName", name)
        if not rev and latest is not True:
            _fail(f"{at}.revisionName", "is required unless latestRevision is true", name)
        pct = t.get("percent", 0)
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            _fail(f"{at}.percent", f"{pct!r} must be a whole number from 0 to 100", name)
        total += pct
        tag = t.get("tag")
        if tag is not None:
            if not tag or len(tag) > 63 or not _DNS1035.match(tag):
                _fail(f"{at}.tag", f"'{tag}' must be a DNS-1035 label", name)
            if tag in tags:
                _fail(f"{at}.tag",
                      f"tag '{tag}' is used twice (also spec.traffic[{tags[tag]}]); a tag names one revision", name)
            tags[tag] = i
    if traffic and total != 100:
        _fail("spec.traffic", f"traffic percents sum to {total}, not 100", name)


def validate_service(manifest: dict, existing: Optional[dict] = None) -> dict:
    """Schema, then webhook rules. Returns the manifest; raises ManifestError naming the field."""
    if not isinstance(manifest, dict):
        raise ManifestError("A Knative Service manifest must be a mapping.")
    validate_schema(manifest)
    validate_webhook(manifest, existing)
    return manifest
