"""Apache OpenWhisk target: a plain REST client (`requests`) for any OpenWhisk API,
including the embedded local controller (`mlfn local up`).

Naming on the platform (one package per function):

    /NAMESPACE/FUNCTION            package; annotations mlfn-function and mlfn-last-version
                                   (version numbers are reserved there, never reused)
    /NAMESPACE/FUNCTION/vN         version N: an immutable docker (blackbox) action that
                                   references the image (by digest when pushed), with
                                   mlfn's metadata in annotations (mlfn-*)
    /NAMESPACE/FUNCTION/ALIAS      an alias ("default", "stable", "canary", ...):
                                   - routed 100% to one version: a copy of that version's
                                     exec and limits, so calls take no extra hop;
                                   - weighted: a conductor action (annotation conductor:
                                     true) whose code picks a version by weight and returns
                                     {action, params}; the platform runs the version and
                                     the router passes its result through.

The router runs in the function's own image (a blackbox action with code; the runtime
honours code sent in /init): no extra runtime kind has to exist on the platform, the
image is already on the invokers that run the versions, and the router needs only the
Python standard library. Alias history (for rollback) lives in the alias action's
annotations, so all state is read back from the platform.

Write order keeps every alias valid if a command stops half-way: versions are created
before aliases move, aliases move (or go) before versions are deleted.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote

from mlfn.errors import ConfigError, NotFoundError, TargetError
from mlfn.targets.base import (DEFAULT_ALIAS, Alias, DeployResult, InvokeResult, Status, Target, Version,
                               VersionSpec)
from mlfn.targets.http import HttpClient, _safe
from mlfn.targets.wskprops import WskProps, load_wskprops
from mlfn.traffic import TrafficError, format_weights, validate_weights, version_number

log = logging.getLogger(__name__)

ANN = "mlfn-"
HISTORY_LIMIT = 20
ROUTER_MEMORY = 128
ENTITY_NAME = r"\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\Z"
SECRET_KEYS = ("require-whisk-auth",)


def _kv(d: dict) -> list:
    return [{"key": k, "value": v} for k, v in d.items()]


def _unkv(items: Optional[list]) -> dict:
    return {i.get("key"): i.get("value") for i in (items or []) if isinstance(i, dict)}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_alias_name(alias: str) -> str:
    import re

    if re.match(r"^v[0-9]+$", alias or ""):
        raise TargetError(f"Alias '{alias}' looks like a version name; pick a name such as 'stable' or 'canary'.")
    # OpenWhisk's entity names allow spaces, '@' and '&' too, but an alias must also be callable
    # as NAME@ALIAS (mlfn invoke, mlfn.deploy.parse_ref).
    if (not re.match(ENTITY_NAME, alias or "") or not re.match(r"\A[\w][\w.-]*\Z", alias)
            or alias.endswith((".json", ".http", ".html", ".svg", ".text"))):
        raise TargetError(f"Alias '{alias}' is not a valid alias name; use letters, digits, '.', '-' and '_'.")
    return alias


def check_function_name(name: str) -> str:
    import re

    if not re.match(ENTITY_NAME, name or "") or "/" in name:
        raise ConfigError(f"Function name '{name}' is not a valid OpenWhisk package name; use letters, digits, '-' and '_'.")
    return name


class DryRunRecorder:
    """Collects the write requests a dry run would send (secrets redacted)."""

    def __init__(self):
        self.requests: list = []

    def add(self, method: str, url: str, params: Optional[dict], body: Any) -> None:
        self.requests.append({"method": method, "url": _safe(url) + (f"?{_qs(params)}" if params else ""),
                              "body": redact(body)})


def _qs(params: dict) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


def redact(body: Any) -> Any:
    if isinstance(body, dict):
        out = {}
        for k, v in body.items():
            if k in ("annotations", "parameters") and isinstance(v, list):
                out[k] = [{**i, "value": "***"} if i.get("key") in SECRET_KEYS and isinstance(i.get("value"), str)
                          else i for i in v]
            else:
                out[k] = redact(v)
        return out
    return body


class OpenWhiskTarget(Target):
    """Versions and aliases on an OpenWhisk REST API (see the module docstring)."""

    name = "openwhisk"

    def __init__(self, cfg=None, *, apihost: Optional[str] = None, auth: Optional[str] = None,
                 namespace: Optional[str] = None, insecure: bool = False, dry_run: bool = False,
                 props: Optional[WskProps] = None, attempts: int = 5, backoff: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep, target_name: str = "openwhisk"):
        ow_cfg = getattr(getattr(cfg, "deploy", None), "openwhisk", None)
        if props is None:
            props = load_wskprops(apihost=apihost, auth=auth,
                                  namespace=namespace or getattr(ow_cfg, "namespace", None), insecure=insecure)
        self.props = props
        self.name = target_name
        self.dry_run = dry_run
        # A dry run (or `mlfn render`) without an endpoint plans offline: nothing is read or sent.
        self.offline = dry_run and not (props.apihost and props.auth)
        self.base = "https://OPENWHISK_APIHOST" if self.offline else props.base_url
        self.namespace = props.namespace or "_"
        self.recorder = DryRunRecorder()
        self.http = HttpClient(auth=None if self.offline else props.credentials, verify=not props.insecure,
                               attempts=attempts, backoff=backoff, sleep=sleep)
        self._resolved_ns: Optional[str] = None
        self.web_secret: Optional[str] = None  # set once when a new require-whisk-auth secret is generated
        self._warned_offline = False

    # ---- low level ---------------------------------------------------------------------------

    def _url(self, *parts: str) -> str:
        path = "/".join(quote(p, safe="") for p in parts)
        return f"{self.base}/api/v1/namespaces/{quote(self.namespace, safe='')}/{path}"

    def _request(self, method: str, url: str, *, params: Optional[dict] = None, body: Any = None,
                 ok=(200,), missing_ok: bool = False, invoke: bool = False):
        if self.dry_run and (method != "GET" or self.offline):
            if method != "GET":
                self.recorder.add(method, url, params, body)
            return None
        try:
            resp = self.http.request(method, url, params=params, json=body,
                                     retry_statuses=(429, 503) if invoke else (429, 500, 502, 503, 504),
                                     timeout=(300 if invoke else None))
        except TargetError as e:
            if self.dry_run:  # a dry run works offline: plan as if nothing existed yet
                if not self._warned_offline:
                    self._warned_offline = True
                    log.warning("%s; the dry run plans as if nothing were deployed there.", str(e).split(";")[0])
                return None
            self._raise_if_local_down()
            raise
        if resp.status_code in ok:
            return resp
        if resp.status_code == 404 and missing_ok:
            return None
        raise self._error(method, url, resp)

    def _raise_if_local_down(self) -> None:
        """The local target's controller is ours to start: say how, instead of 'cannot reach'."""
        from mlfn.targets.local import _ping, _status

        if self.name == "local" and not _ping(self.base, timeout=1.0):
            st = _status()
            if st.running and st.apihost != self.base:
                raise TargetError(f"Nothing answers on {self.base}; the local OpenWhisk API runs on {st.apihost} "
                                  f"(pass --port {st.apihost.rsplit(':', 1)[1]}).") from None
            raise TargetError(f"The local OpenWhisk API at {self.base} is not running; start it with "
                              "'mlfn local up'.") from None

    def _error(self, method: str, url: str, resp) -> TargetError:
        try:
            detail = resp.json().get("error") or resp.text
        except ValueError:
            detail = resp.text[:200]
        where = _safe(url)
        if resp.status_code == 401:
            return TargetError(f"OpenWhisk at {self.base} rejected the credentials (401); check AUTH in "
                               f"{self.props.source or 'your flags'}.")
        if resp.status_code == 404:
            return NotFoundError(f"{where} does not exist (404).")
        return TargetError(f"OpenWhisk {method} {where} failed with HTTP {resp.status_code}: {detail}")

    def _get(self, *parts: str, missing_ok: bool = True) -> Optional[dict]:
        resp = self._request("GET", self._url(*parts), missing_ok=missing_ok)
        return resp.json() if resp is not None else None

    def _put(self, parts: tuple, body: dict, overwrite: bool = True) -> Optional[dict]:
        resp = self._request("PUT", self._url(*parts), params={"overwrite": str(overwrite).lower()}, body=body,
                             ok=(200,) if overwrite else (200, 409))
        if resp is None:
            return None
        if resp.status_code == 409:
            return {"__conflict__": True}
        return resp.json()

    def _delete(self, *parts: str) -> None:
        self._request("DELETE", self._url(*parts), missing_ok=True)

    def resolved_namespace(self) -> str:
        """The real namespace name (for conductor action paths and web URLs)."""
        if self.namespace != "_":
            return self.namespace
        if self._resolved_ns is None:
            resp = self._request("GET", f"{self.base}/api/v1/namespaces", missing_ok=True)
            names = resp.json() if resp is not None else []
            self._resolved_ns = names[0] if names else "_"
        return self._resolved_ns

    # ---- reading state -----------------------------------------------------------------------

    def _package(self, function: str) -> Optional[dict]:
        return self._get("packages", check_function_name(function))

    def _entities(self, function: str):
        """(versions, alias annotations by name) from one GET of the package."""
        pkg = self._package(function)
        if pkg is None:
            raise NotFoundError(f"Function '{function}' does not exist on {self.name} ({self.base}); "
                                f"deploy it first with 'mlfn deploy'.")
        return self._entities_of(pkg)

    def _entities_of(self, pkg: dict):
        versions, aliases = [], {}
        for a in pkg.get("actions") or []:
            ann = _unkv(a.get("annotations"))
            kind = ann.get(ANN + "kind")
            if kind == "version":
                versions.append(self._version_from(ann, a["name"]))
            elif kind == "alias":
                aliases[a["name"]] = ann
        versions.sort(key=lambda v: v.number)
        return versions, aliases

    def _version_from(self, ann: dict, name: str) -> Version:
        return Version(name=name, number=int(ann.get(ANN + "number") or version_number(name)),
                       image=ann.get(ANN + "image", ""), digest=ann.get(ANN + "digest", ""),
                       model_sha256=ann.get(ANN + "model-sha256", ""), quantization=ann.get(ANN + "quantization", ""),
                       pipeline_hash=ann.get(ANN + "pipeline-hash", ""), content_hash=ann.get(ANN + "content-hash", ""),
                       created=ann.get(ANN + "created", ""))

    def _alias_from(self, function: str, name: str, ann: dict) -> Alias:
        history = ann.get(ANN + "history") or []
        alias = Alias(name=name, weights=dict(ann.get(ANN + "weights") or {}),
                      previous=dict(history[-1]) if history else None,
                      url=f"{self.base}/api/v1/namespaces/{self.namespace}/actions/{function}/{name}")
        if ann.get("web-export"):
            alias.web_url = self.web_url(function, name)
        return alias

    def web_url(self, function: str, alias: str) -> str:
        return f"{self.base}/api/v1/web/{self.resolved_namespace()}/{function}/{alias}"

    def versions(self, function: str) -> list:
        return self._entities(function)[0]

    def status(self, function: str) -> Status:
        versions, aliases = self._entities(function)
        return Status(function=function, target=self.name, versions=versions,
                      aliases=[self._alias_from(function, n, a) for n, a in sorted(aliases.items())],
                      url=f"{self.base}/api/v1/namespaces/{self.namespace}/packages/{function}")

    # ---- publishing --------------------------------------------------------------------------

    def _version_body(self, spec: VersionSpec, name: str, number: int) -> dict:
        meta = {
            ANN + "kind": "version", ANN + "function": spec.function, ANN + "version": name, ANN + "number": number,
            ANN + "image": spec.image, ANN + "digest": spec.digest, ANN + "model-sha256": spec.model_sha256,
            ANN + "quantization": spec.quantization, ANN + "pipeline-hash": spec.pipeline_hash,
            ANN + "content-hash": spec.content_hash, ANN + "created": _now(),
            ANN + "memory": spec.memory, ANN + "timeout": spec.timeout, ANN + "concurrency": spec.concurrency,
            ANN + "logs": spec.logs,
        }
        if spec.labels:
            meta[ANN + "labels"] = spec.labels
        params = [{"key": "MLFN_VERSION", "value": name, "init": True}]
        params += [{"key": str(k), "value": str(v), "init": True} for k, v in (spec.env or {}).items()]
        return {
            "namespace": self.namespace, "name": name,
            "exec": {"kind": "blackbox", "image": spec.image},
            "limits": {"memory": spec.memory, "timeout": spec.timeout, "concurrency": spec.concurrency,
                       "logs": spec.logs},
            "annotations": _kv(meta) + [{"key": "exec", "value": "blackbox"}],
            "parameters": params,
            "publish": False,
        }

    def _package_body(self, function: str, annotations: dict, parameters: Optional[list] = None) -> dict:
        return {"namespace": self.namespace, "name": function, "publish": False,
                "annotations": _kv(annotations), "parameters": parameters or []}

    def _reserve(self, function: str, pkg: Optional[dict], number: int) -> None:
        """Record vN as allocated in the package (before creating it), so a number is never
        reused for different content, even after vN is deleted."""
        ann = _unkv((pkg or {}).get("annotations"))
        if not ann:
            ann = {ANN + "function": function, "description": f"mlfn function {function}: versions vN and aliases"}
        ann[ANN + "last-version"] = number
        self._put(("packages", function), self._package_body(function, ann, (pkg or {}).get("parameters")))

    def publish(self, spec: VersionSpec, progress: Callable[[str], None] = lambda m: None) -> DeployResult:
        function = check_function_name(spec.function)
        pkg = self._package(function)
        versions, aliases = self._entities_of(pkg) if pkg is not None else ([], {})
        for v in versions:
            if spec.content_hash and v.content_hash == spec.content_hash:
                progress(f"{function}/{v.name} already has this content ({spec.content_hash[:12]}); no new version")
                return DeployResult(function=function, version=v, created=False,
                                    aliases=[self._alias_from(function, n, a) for n, a in sorted(aliases.items())])
        last = _unkv((pkg or {}).get("annotations")).get(ANN + "last-version") or 0
        number = max([v.number for v in versions] + [int(last)]) + 1
        for _ in range(10):
            name = f"v{number}"
            self._reserve(function, pkg, number)
            body = self._version_body(spec, name, number)
            progress(f"Creating {function}/{name} ({spec.image})")
            out = self._put(("actions", function, name), body, overwrite=False)
            if out is None or not out.get("__conflict__"):
                break
            # Someone (or a retried request of ours) created vN: ours if the content matches.
            existing = self._get("actions", function, name)
            if existing and _unkv(existing.get("annotations")).get(ANN + "content-hash") == spec.content_hash:
                break
            number += 1
            pkg = self._package(function)
        else:
            raise TargetError(f"Could not allocate a new version number for {function}; too many concurrent deploys.")
        version = self._version_from(_unkv(body["annotations"]), name)
        result_aliases = [self._alias_from(function, n, a) for n, a in sorted(aliases.items())]
        if not versions and DEFAULT_ALIAS not in aliases:
            progress(f"Routing alias '{DEFAULT_ALIAS}' to {name} (first version)")
            result_aliases = [self._write_alias(function, DEFAULT_ALIAS, {name: 100}, {name: body}, None, web=None)]
        return DeployResult(function=function, version=version, created=True, aliases=result_aliases)

    # ---- aliases -----------------------------------------------------------------------------

    def _version_actions(self, function: str, names) -> dict:
        out = {}
        for n in names:
            a = self._get("actions", function, n)
            if a is None:
                if self.dry_run:
                    a = {"exec": {"kind": "blackbox", "image": "<image of %s>" % n}, "limits": {}, "parameters": []}
                else:
                    raise NotFoundError(f"Version {n} of '{function}' does not exist; see 'mlfn versions {function}'.")
            out[n] = a
        return out

    def _router_code(self, function: str, alias: str, weights: dict) -> str:
        import jinja2

        ns = self.resolved_namespace()
        routes = [[f"/{ns}/{function}/{v}", w] for v, w in weights.items() if w > 0]
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), keep_trailing_newline=True)
        return env.get_template("router.py.j2").render(
            function=function, alias=alias, weights_text=format_weights(weights), routes_json=json.dumps(routes))

    def _write_alias(self, function: str, alias: str, weights: dict, actions: dict, current: Optional[dict],
                     web: Optional[bool], history: Optional[list] = None) -> Alias:
        """PUT the alias action for weights; `current` = its annotations now (None if new)."""
        routed = [v for v, w in weights.items() if w > 0]
        if history is None:
            history = list((current or {}).get(ANN + "history") or [])
            if current and current.get(ANN + "weights") and current.get(ANN + "weights") != weights:
                history.append(current[ANN + "weights"])
        history = history[-HISTORY_LIMIT:]
        ann = {ANN + "kind": "alias", ANN + "function": function, ANN + "alias": alias, ANN + "weights": weights,
               ANN + "history": history, ANN + "updated": _now()}
        export = bool((current or {}).get("web-export")) if web is None else web
        if export:
            ann["web-export"] = True
            secret = (current or {}).get("require-whisk-auth")
            if secret is None and self._require_auth:
                secret = self.web_secret = secrets.token_urlsafe(24)
            if secret is not None:
                ann["require-whisk-auth"] = secret
        if len(routed) == 1:
            src = actions[routed[0]]
            exec_ = {"kind": "blackbox", "image": src["exec"].get("image")}
            limits = {k: v for k, v in (src.get("limits") or {}).items() if k in ("memory", "timeout", "concurrency", "logs")}
            params = list(src.get("parameters") or [])
            ann["exec"] = "blackbox"
        else:
            first = max(routed, key=lambda v: weights[v])
            src = actions[first]
            exec_ = {"kind": "blackbox", "image": src["exec"].get("image"), "main": "main",
                     "code": self._router_code(function, alias, weights)}
            # The router starts the function image (which loads its model), so it gets the
            # version's memory limit rather than the platform minimum.
            src_limits = src.get("limits") or {}
            limits = {"memory": max(ROUTER_MEMORY, int(src_limits.get("memory", 256))),
                      "timeout": src_limits.get("timeout", 60000), "concurrency": 1, "logs": 10}
            params = []
            ann["conductor"] = True
        body = {"namespace": self.namespace, "name": alias, "exec": exec_, "limits": limits,
                "annotations": _kv(ann), "parameters": params, "publish": False}
        self._put(("actions", function, alias), body, overwrite=True)
        return self._alias_from(function, alias, ann)

    _require_auth = False

    def set_traffic(self, function: str, alias: str, weights: dict, web: Optional[bool] = None,
                    require_whisk_auth: Optional[bool] = None) -> Alias:
        check_alias_name(alias)
        weights = validate_weights(dict(weights))
        versions, aliases = self._entities_or_empty(function)
        known = {v.name for v in versions}
        missing = [v for v in weights if v not in known]
        if missing and not self.dry_run:
            raise NotFoundError(f"{', '.join(missing)} of '{function}' {'does' if len(missing) == 1 else 'do'} not "
                                f"exist; existing versions: "
                                f"{', '.join(sorted(known, key=version_number)) or 'none'}.")
        actions = self._version_actions(function, [v for v, w in weights.items() if w > 0])
        self._require_auth = bool(require_whisk_auth)
        try:
            return self._write_alias(function, alias, weights, actions, aliases.get(alias), web)
        finally:
            self._require_auth = False

    def _entities_or_empty(self, function: str):
        try:
            return self._entities(function)
        except NotFoundError:
            if self.dry_run:
                return [], {}
            raise

    def rollback(self, function: str, alias: str = DEFAULT_ALIAS) -> Alias:
        _, aliases = self._entities(function)
        current = aliases.get(alias)
        if current is None:
            raise NotFoundError(f"Alias '{alias}' of '{function}' does not exist; see 'mlfn status {function}'.")
        history = list(current.get(ANN + "history") or [])
        if not history:
            raise TargetError(f"Alias '{alias}' of '{function}' has no earlier assignment to roll back to.")
        previous = validate_weights(history.pop())
        actions = self._version_actions(function, [v for v, w in previous.items() if w > 0])
        return self._write_alias(function, alias, previous, actions, current, None, history=history)

    # ---- deleting ----------------------------------------------------------------------------

    def delete(self, function: str, version: Optional[str] = None, force: bool = False) -> list:
        versions, aliases = self._entities(function)
        deleted = []
        if version is None:
            for name in sorted(aliases):  # aliases first: no alias ever points at a missing version
                self._delete("actions", function, name)
                deleted.append(f"{function}/{name}")
            for v in versions:
                self._delete("actions", function, v.name)
                deleted.append(f"{function}/{v.name}")
            self._request("DELETE", self._url("packages", function), params={"force": "true"}, missing_ok=True)
            deleted.append(function)
            return deleted
        version_number(version)
        if version not in {v.name for v in versions}:
            raise NotFoundError(f"Version {version} of '{function}' does not exist; see 'mlfn versions {function}'.")
        routing = sorted(n for n, a in aliases.items() if version in (a.get(ANN + "weights") or {}))
        if routing and not force:
            raise TargetError(
                f"Version {version} of '{function}' is routed by alias(es) {', '.join(routing)}; move them first "
                f"(mlfn promote/traffic) or pass --force to delete those aliases too.")
        for name in routing:
            self._delete("actions", function, name)
            deleted.append(f"{function}/{name}")
        self._delete("actions", function, version)
        deleted.append(f"{function}/{version}")
        return deleted

    # ---- invoking ----------------------------------------------------------------------------

    def invoke(self, function: str, payload: Any, alias: Optional[str] = None,
               version: Optional[str] = None, timeout: float = 120.0) -> InvokeResult:
        entity = version or alias or DEFAULT_ALIAS
        url = self._url("actions", function, entity)
        t0 = time.monotonic()
        try:
            resp = self.http.request("POST", url, params={"blocking": "true"}, json=payload,
                                     retry_statuses=(429, 503), timeout=timeout)
        except TargetError:
            self._raise_if_local_down()
            raise
        if resp.status_code == 404:
            raise NotFoundError(f"'{function}/{entity}' does not exist on {self.name}; see 'mlfn status {function}'.")
        if resp.status_code not in (200, 202, 502):
            raise self._error("POST", url, resp)
        act = resp.json()
        if resp.status_code == 202:
            act = self._wait_activation(act.get("activationId") or resp.headers.get("x-openwhisk-activation-id"),
                                        deadline=t0 + timeout)
        elapsed = (time.monotonic() - t0) * 1000
        response = act.get("response") or {}
        served = version or self._served_version(function, entity, act)
        if not response.get("success", False):
            err = (response.get("result") or {}).get("error") if isinstance(response.get("result"), dict) else None
            raise TargetError(f"{function}/{entity} ({served or 'unknown version'}) answered with an error: "
                              f"{err or response.get('status', 'failure')} (activation {act.get('activationId')}).")
        return InvokeResult(result=response.get("result"), version=served, activation_id=act.get("activationId"),
                            duration_ms=round(elapsed, 1), status_code=resp.status_code)

    def _wait_activation(self, activation_id: str, deadline: float) -> dict:
        while time.monotonic() < deadline:
            act = self._get("activations", activation_id)
            if act is not None:
                return act
            time.sleep(0.5)
        raise TargetError(f"Activation {activation_id} did not finish in time; "
                          f"see 'wsk activation get {activation_id}'.")

    def _served_version(self, function: str, entity: str, act: dict) -> Optional[str]:
        """Which version ran: the component activation of a conductor, or the alias's one version."""
        ann = _unkv(act.get("annotations"))
        if ann.get("conductor"):
            # logs = [router, version, router]; activation records may land a moment later
            ids = list(act.get("logs") or [])
            for aid in ids[1:2] + ids[:1] + ids[2:]:
                for attempt in range(5):
                    sub = self._get("activations", aid)
                    if sub is not None:
                        break
                    time.sleep(0.1 * (attempt + 1))
                if sub and sub.get("name", "").startswith("v") and sub["name"][1:].isdigit():
                    return sub["name"]
            return None
        a = self._get("actions", function, entity)
        if a is None:
            return None
        w = _unkv(a.get("annotations")).get(ANN + "weights") or {}
        routed = [v for v, x in w.items() if x > 0]
        return routed[0] if len(routed) == 1 else None

    # ---- GitOps ------------------------------------------------------------------------------

    def render(self, spec: VersionSpec, out_dir: str) -> list:
        """A wskdeploy manifest with version v1 and the default alias routed to it."""
        import jinja2

        body = self._version_body(spec, "v1", 1)
        version = {"name": "v1", "image": spec.image, "limits": body["limits"], "annotations": body["annotations"],
                   "inputs": {p["key"]: p["value"] for p in body["parameters"]}, "web": False}
        alias_ann = _kv({ANN + "kind": "alias", ANN + "function": spec.function, ANN + "alias": DEFAULT_ALIAS,
                         ANN + "weights": {"v1": 100}, ANN + "history": []})
        alias = dict(version, name=DEFAULT_ALIAS, annotations=alias_ann, web=False)
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), keep_trailing_newline=True)
        text = env.get_template("manifest.yaml.j2").render(
            function=spec.function, package=spec.function,
            package_annotations=_kv({ANN + "function": spec.function}), actions=[version, alias])
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "manifest.yaml"
        path.write_text(text)
        return [str(path)]


def templates_dir() -> Path:
    import mlfn.templates

    return Path(mlfn.templates.__file__).parent / "openwhisk"


def local_target(cfg=None, *, port: Optional[int] = None, dry_run: bool = False, **kw) -> OpenWhiskTarget:
    """The same OpenWhisk client pointed at the embedded controller (`mlfn local up`)."""
    import os

    from mlfn.targets.local import _alive, _read_runfile, local_apihost, state_dir
    from mlfn.targets.wskprops import GUEST_AUTH, GUEST_NAMESPACE

    if port is None and not os.environ.get("MLFN_LOCAL_APIHOST") and not dry_run:
        # Without --port the controller is the one of this state folder (MLFN_LOCAL_HOME): when it
        # is not running, say so rather than talk to whatever else listens on the default port.
        pid = (_read_runfile() or {}).get("pid")
        if not pid or not _alive(pid):
            raise TargetError(f"The local OpenWhisk API of {state_dir()} is not running; start it with "
                              "'mlfn local up' (or pass --port N for one that runs elsewhere).")
    props = WskProps(apihost=local_apihost(port), auth=GUEST_AUTH, namespace=GUEST_NAMESPACE, source="mlfn local")
    kw.setdefault("attempts", 3)  # a stopped local controller fails fast with a hint
    return OpenWhiskTarget(cfg, props=props, dry_run=dry_run, target_name="local", **kw)
