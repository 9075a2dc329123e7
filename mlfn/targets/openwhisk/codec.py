"""Versions and aliases <-> OpenWhisk entities (docs/architecture.md, "OpenWhisk").

    /NAMESPACE/FUNCTION            package; annotations mlfn-function and mlfn-last-version
                                   (version numbers are reserved there, never reused)
    /NAMESPACE/FUNCTION/vN         version N: an immutable docker (blackbox) action that
                                   references the image, mlfn's metadata in annotations mlfn-*
    /NAMESPACE/FUNCTION/ALIAS      an alias: routed 100% to one version, a copy of that
                                   version's exec and limits (no extra hop); weighted, a
                                   conductor action of the function's own image whose init
                                   parameter MLFN_ALIAS_ROUTES names the versions and weights
                                   (mlfn_runtime.router picks one; no code is sent).

The alias's weights and history are annotations of the alias action, so all state is read
back from the platform. One field table (mlfn.targets.annotations) maps the records.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Optional

from mlfn.errors import ConfigError, TargetError
from mlfn.targets.annotations import FieldTable, attributes
from mlfn.targets.interface import ActivationRecord, Alias, AliasRecord, Version, VersionSpec
from mlfn.traffic import version_number

PREFIX = "mlfn-"
ROUTER_MEMORY = 128
ENTITY_NAME = r"\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\Z"
SECRET = "require-whisk-auth"

VERSION_FIELDS = FieldTable(PREFIX, (
    ("name", "version"), ("number", "number"), ("image", "image"), ("digest", "digest"),
    ("model_sha256", "model-sha256"), ("quantization", "quantization"), ("pipeline_hash", "pipeline-hash"),
    ("content_hash", "content-hash"), ("created", "created")))
LIMIT_FIELDS = FieldTable(PREFIX, (("memory", "memory"), ("timeout", "timeout"), ("concurrency", "concurrency"),
                                   ("logs", "logs"), ("labels", "labels")))
ALIAS_FIELDS = FieldTable(PREFIX, (("name", "alias"), ("weights", "weights"), ("history", "history"),
                                   ("rollouts", "rollouts")))
KIND = PREFIX + "kind"
FUNCTION = PREFIX + "function"
LAST_VERSION = PREFIX + "last-version"


def kv(d: dict) -> list:
    return [{"key": k, "value": v} for k, v in d.items()]


def unkv(items: Optional[list]) -> dict:
    return {i.get("key"): i.get("value") for i in (items or []) if isinstance(i, dict)}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_alias_name(alias: str) -> str:
    if re.match(r"^v[0-9]+$", alias or ""):
        raise TargetError(f"Alias '{alias}' looks like a version name; pick a name such as 'stable' or 'canary'.")
    # OpenWhisk's entity names allow spaces, '@' and '&' too, but an alias must also be callable
    # as NAME@ALIAS (mlfn invoke, mlfn.releases.parse_ref).
    if (not re.match(ENTITY_NAME, alias or "") or not re.match(r"\A[\w][\w.-]*\Z", alias)
            or alias.endswith((".json", ".http", ".html", ".svg", ".text"))):
        raise TargetError(f"Alias '{alias}' is not a valid alias name; use letters, digits, '.', '-' and '_'.")
    return alias


def check_function_name(name: str) -> str:
    if not re.match(ENTITY_NAME, name or "") or "/" in name:
        raise ConfigError(f"Function name '{name}' is not a valid OpenWhisk package name; use letters, digits, '-' and '_'.")
    return name


# ---- versions ---------------------------------------------------------------------------------


def version_body(spec: VersionSpec, name: str, number: int, namespace: str) -> dict:
    values = {**attributes(spec, VERSION_FIELDS), **attributes(spec, LIMIT_FIELDS),
              "name": name, "number": number, "created": now(), "labels": spec.labels or None}
    meta = {KIND: "version", FUNCTION: spec.function, **VERSION_FIELDS.encode(values), **LIMIT_FIELDS.encode(values)}
    params = [{"key": "MLFN_VERSION", "value": name, "init": True}]
    params += [{"key": str(k), "value": str(v), "init": True} for k, v in (spec.env or {}).items()]
    return {
        "namespace": namespace, "name": name,
        "exec": {"kind": "blackbox", "image": spec.image},
        "limits": {"memory": spec.memory, "timeout": spec.timeout, "concurrency": spec.concurrency,
                   "logs": spec.logs},
        "annotations": kv(meta) + [{"key": "exec", "value": "blackbox"}],
        "parameters": params,
        "publish": False,
    }


def version_from(action: dict) -> Version:
    fields = VERSION_FIELDS.decode(unkv(action.get("annotations")))
    fields.setdefault("name", action["name"])
    fields["name"] = action["name"]
    fields["number"] = int(fields.get("number") or version_number(action["name"]))
    fields.setdefault("image", "")
    fields.setdefault("digest", "")
    return Version(**fields)


def package_body(function: str, namespace: str, annotations: dict, parameters: Optional[list] = None) -> dict:
    return {"namespace": namespace, "name": function, "publish": False, "annotations": kv(annotations),
            "parameters": parameters or []}


def reserved_package(function: str, namespace: str, pkg: Optional[dict], number: int) -> dict:
    """The package with vN recorded as allocated (a number is never reused, even after vN is deleted)."""
    ann = unkv((pkg or {}).get("annotations"))
    if not ann:
        ann = {FUNCTION: function, "description": f"mlfn function {function}: versions vN and aliases"}
    ann[LAST_VERSION] = number
    return package_body(function, namespace, ann, (pkg or {}).get("parameters"))


KEY_SET_PARAM = "mlfn_auth"  # package parameter: the API key set (mlfn_runtime.auth reads it at /run)


def key_set_of(pkg: Optional[dict]) -> dict:
    """The key set document bound to the function's package (`{"keys": []}` when none)."""
    for p in (pkg or {}).get("parameters") or []:
        if p.get("key") == KEY_SET_PARAM and isinstance(p.get("value"), dict):
            return p["value"]
    return {"keys": []}


def package_with_key_set(function: str, namespace: str, pkg: dict, key_set: dict) -> dict:
    """The package with its key set parameter replaced; annotations and other parameters kept."""
    params = [p for p in pkg.get("parameters") or [] if p.get("key") != KEY_SET_PARAM]
    return package_body(function, namespace, unkv(pkg.get("annotations")), params + [{"key": KEY_SET_PARAM,
                                                                                      "value": key_set}])


def entities(pkg: dict):
    """(versions oldest first, {alias name: alias action}) from a package with its actions."""
    versions, aliases = [], {}
    for a in pkg.get("actions") or []:
        kind = unkv(a.get("annotations")).get(KIND)
        if kind == "version":
            versions.append(version_from(a))
        elif kind == "alias":
            aliases[a["name"]] = a
    versions.sort(key=lambda v: v.number)
    return versions, aliases


# ---- aliases ----------------------------------------------------------------------------------


def alias_from(action: dict, url: str, web_url: str) -> Alias:
    ann = unkv(action.get("annotations"))
    fields = ALIAS_FIELDS.decode(ann)
    web = bool(ann.get("web-export"))
    return Alias(name=action["name"], weights=dict(fields.get("weights") or {}),
                 history=[dict(h) for h in fields.get("history") or []], url=url,
                 web_url=web_url if web else None, web=web,
                 rollouts=[dict(r) for r in fields.get("rollouts") or [] if isinstance(r, dict)])


STATUS_NAMES = {0: "success", 1: "application error", 2: "developer error", 3: "whisk internal error"}


def activation_record(act: dict) -> ActivationRecord:
    """An ActivationRecord from an activation document (full, or the brief form of a listing)."""
    code = act.get("statusCode")
    if code is None:
        code = (act.get("response") or {}).get("statusCode", 3)
    return ActivationRecord(activation_id=act.get("activationId", ""), start_ms=int(act.get("start") or 0),
                            duration_ms=float(act.get("duration") or 0),
                            status=STATUS_NAMES.get(int(code), "whisk internal error"))


ALIAS_ROUTES_PARAM = "MLFN_ALIAS_ROUTES"  # mlfn_runtime.router.ALIAS_ROUTES_ENV


def conductor_routes(namespace: str, function: str, weights: dict) -> dict:
    """{"/NAMESPACE/FUNCTION/vN": weight} of the versions a weighted alias routes to: the init
    parameter the function image's runtime conducts by (mlfn_runtime.router); no code is sent."""
    return {f"/{namespace}/{function}/{v}": w for v, w in weights.items() if w > 0}


def alias_body(function: str, namespace: str, record: AliasRecord, versions: dict, secret: Optional[str],
               routes: Optional[dict]) -> dict:
    """The alias action: a copy of the one routed version, or a conductor of the function's
    own image that picks among `routes` (conductor_routes) by weight."""
    fields = {**attributes(record, ALIAS_FIELDS), "rollouts": record.rollouts or None}  # none: no annotation
    ann = {KIND: "alias", FUNCTION: function, **ALIAS_FIELDS.encode(fields), PREFIX + "updated": now()}
    if record.web:
        ann["web-export"] = True
        ann["final"] = True  # web requests cannot override bound parameters (the key set, mlfn_auth)
        if secret is not None:
            ann[SECRET] = secret
    routed = [v for v, w in record.weights.items() if w > 0]
    if len(routed) == 1:
        src = versions[routed[0]]
        exec_ = {"kind": "blackbox", "image": src["exec"].get("image")}
        limits = {k: v for k, v in (src.get("limits") or {}).items() if k in ("memory", "timeout", "concurrency", "logs")}
        params = list(src.get("parameters") or [])
        ann["exec"] = "blackbox"
    else:
        src = versions[max(routed, key=lambda v: record.weights[v])]
        exec_ = {"kind": "blackbox", "image": src["exec"].get("image")}
        # The router starts the function image (which loads its model), so it gets the
        # version's memory limit rather than the platform minimum.
        src_limits = src.get("limits") or {}
        limits = {"memory": max(ROUTER_MEMORY, int(src_limits.get("memory", 256))),
                  "timeout": src_limits.get("timeout", 60000), "concurrency": 1, "logs": 10}
        params = [{"key": ALIAS_ROUTES_PARAM, "value": json.dumps(routes), "init": True}]
        ann["conductor"] = True
        ann["exec"] = "blackbox"
    return {"namespace": namespace, "name": record.name, "exec": exec_, "limits": limits,
            "annotations": kv(ann), "parameters": params, "publish": False}


def served_by_alias(action: Optional[dict]) -> Optional[str]:
    """The version an alias action routes 100% to (None when weighted or unknown)."""
    weights = ALIAS_FIELDS.decode(unkv((action or {}).get("annotations"))).get("weights") or {}
    live = [v for v, w in weights.items() if w > 0]
    return live[0] if len(live) == 1 else None


def manifest_actions(spec: VersionSpec, namespace: str) -> list:
    """wskdeploy actions for `mlfn render`: v1 and the default alias routed to it."""
    body = version_body(spec, "v1", 1, namespace)
    version = {"name": "v1", "image": spec.image, "limits": body["limits"], "annotations": body["annotations"],
               "inputs": {p["key"]: p["value"] for p in body["parameters"]}, "web": False}
    alias_ann = kv({KIND: "alias", FUNCTION: spec.function,
                    **ALIAS_FIELDS.encode({"name": "default", "weights": {"v1": 100}, "history": [],
                                           "rollouts": None})})
    return [version, dict(version, name="default", annotations=alias_ann, web=False)]
