"""Apache OpenWhisk behind the Target interface: any OpenWhisk REST API, including the
embedded local controller (`mlfn local up`). Entities and annotations: codec.py; the REST
client (and its dry-run wrapper): client.py.

Write order keeps every alias valid if a command stops half-way: versions are created
before aliases move, aliases move (or go) before versions are deleted.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, Optional

from mlfn.errors import NotFoundError, TargetError
from mlfn.targets.interface import (DEFAULT_ALIAS, AliasRecord, AliasWritten, InvokeResult, Progress, Published,
                                    State, Target, VersionSpec, quiet)
from mlfn.targets.openwhisk import codec
from mlfn.targets.openwhisk.client import DryRunOpenWhiskClient, OpenWhiskClient, Unreadable
from mlfn.targets.openwhisk.wskprops import WskProps, load_wskprops
from mlfn.targets.recording import Recorder
from mlfn.targets.wait import poll

ALLOCATION_ATTEMPTS = 10
ACTIVATION_PAGE = 200  # OpenWhisk's largest page of activations


def templates_dir() -> Path:
    import mlfn.templates

    return Path(mlfn.templates.__file__).parent / "openwhisk"


class OpenWhiskTarget(Target):
    """Versions and aliases on an OpenWhisk REST API. `client` is an OpenWhiskClient or its
    dry-run wrapper; `name` says which target this is in messages ("openwhisk", "local")."""

    def __init__(self, client, name: str = "openwhisk"):
        self.client = client
        self.name = name

    # ---- reading ----------------------------------------------------------------------------

    def _alias_urls(self, function: str, alias: str) -> tuple:
        base = self.client.base
        url = f"{base}/api/v1/namespaces/{self.client.namespace}/actions/{function}/{alias}"
        return url, f"{base}/api/v1/web/{self.client.resolved_namespace()}/{function}/{alias}"

    def _state_of(self, function: str, pkg: dict) -> State:
        versions, actions = codec.entities(pkg)
        aliases = {n: codec.alias_from(a, *self._alias_urls(function, n)) for n, a in sorted(actions.items())}
        return State(function=function, exists=True, versions=versions, aliases=aliases,
                     url=f"{self.client.base}/api/v1/namespaces/{self.client.namespace}/packages/{function}")

    def read(self, function: str, missing_ok: bool = False) -> State:
        codec.check_function_name(function)
        try:
            pkg = self.client.get("packages", function)
        except Unreadable:
            return State(function=function, exists=False, known=False)
        if pkg is None:
            if missing_ok:
                return State(function=function, exists=False)
            raise NotFoundError(f"Function '{function}' does not exist on {self.name} ({self.client.base}); "
                                f"deploy it first with 'mlfn deploy'.")
        return self._state_of(function, pkg)

    # ---- publishing -------------------------------------------------------------------------

    def publish(self, spec: VersionSpec, progress: Progress = quiet) -> Published:
        function = codec.check_function_name(spec.function)
        try:
            pkg = self.client.get("packages", function)
        except Unreadable:
            pkg = None
        versions = codec.entities(pkg)[0] if pkg is not None else []
        for v in versions:
            if spec.content_hash and v.content_hash == spec.content_hash:
                progress(f"{function}/{v.name} already has this content ({spec.content_hash[:12]}); no new version")
                return Published(v, created=False)
        last = codec.unkv((pkg or {}).get("annotations")).get(codec.LAST_VERSION) or 0
        number = max([v.number for v in versions] + [int(last)]) + 1
        ns = self.client.namespace
        for _ in range(ALLOCATION_ATTEMPTS):
            name = f"v{number}"
            self.client.put(("packages", function), codec.reserved_package(function, ns, pkg, number))
            body = codec.version_body(spec, name, number, ns)
            progress(f"Creating {function}/{name} ({spec.image})")
            if self.client.put(("actions", function, name), body, overwrite=False) is not None:
                break
            # Someone (or a retried request of ours) created vN: ours if the content matches.
            existing = self.client.get("actions", function, name)
            if existing and codec.version_from(existing).content_hash == spec.content_hash:
                break
            number += 1
            pkg = self.client.get("packages", function)
        else:
            raise TargetError(f"Could not allocate a new version number for {function}; too many concurrent deploys.")
        return Published(codec.version_from(body), created=True)

    # ---- aliases ----------------------------------------------------------------------------

    def _version_action(self, function: str, version: str) -> dict:
        try:
            action = self.client.get("actions", function, version)
        except Unreadable:  # planning blind: the alias copies an image nobody could read
            return {"exec": {"kind": "blackbox", "image": f"<image of {version}>"}, "limits": {}, "parameters": []}
        if action is None:
            raise NotFoundError(f"Version {version} of '{function}' does not exist; see 'mlfn versions {function}'.")
        return action

    def _current_secret(self, function: str, alias: str) -> Optional[str]:
        try:
            action = self.client.get("actions", function, alias)
        except Unreadable:
            return None
        return codec.unkv((action or {}).get("annotations")).get(codec.SECRET)

    def write_alias(self, function: str, record: AliasRecord, progress: Progress = quiet) -> AliasWritten:
        codec.check_alias_name(record.name)
        versions = {v: self._version_action(function, v) for v, w in record.weights.items() if w > 0}
        secret = self._current_secret(function, record.name) if record.web else None
        generated = None
        if record.web and secret is None and record.require_auth:
            secret = generated = secrets.token_urlsafe(24)
        routes = None
        if len(versions) > 1:
            routes = codec.conductor_routes(self.client.resolved_namespace(), function, record.weights)
        body = codec.alias_body(function, self.client.namespace, record, versions, secret, routes)
        self.client.put(("actions", function, record.name), body, overwrite=True)
        return AliasWritten(codec.alias_from(body, *self._alias_urls(function, record.name)), web_secret=generated)

    def delete_alias(self, function: str, alias: str) -> None:
        self.client.delete("actions", function, alias)

    def delete_version(self, function: str, version: str) -> None:
        self.client.delete("actions", function, version)

    def delete_function(self, function: str, state: State) -> list:
        deleted = []
        for name in sorted(state.aliases):  # aliases first: no alias ever points at a missing version
            self.client.delete("actions", function, name)
            deleted.append(f"{function}/{name}")
        for v in state.versions:
            self.client.delete("actions", function, v.name)
            deleted.append(f"{function}/{v.name}")
        self.client.delete("packages", function, params={"force": "true"})
        return deleted + [function]

    # ---- API keys: the package parameter mlfn_auth, read by each activation (no delay) --------

    def _package(self, function: str) -> dict:
        codec.check_function_name(function)
        pkg = self.client.get("packages", function)
        if pkg is None:
            raise NotFoundError(f"Function '{function}' does not exist on {self.name} ({self.client.base}); "
                                f"deploy it first with 'mlfn deploy'.")
        return pkg

    def read_key_set(self, function: str) -> dict:
        return codec.key_set_of(self._package(function))

    def write_key_set(self, function: str, key_set: dict) -> None:
        body = codec.package_with_key_set(function, self.client.namespace, self._package(function), key_set)
        self.client.put(("packages", function), body, overwrite=True)

    # ---- invoking ---------------------------------------------------------------------------

    def invoke(self, function: str, payload: Any, alias: Optional[str] = None,
               version: Optional[str] = None, timeout: Optional[float] = None,
               protocol: str = "predict") -> InvokeResult:
        if protocol != "predict":
            raise TargetError(f"{self.name} invokes through the OpenWhisk controller, which passes no gRPC; "
                              "call the function with --protocol grpc under 'mlfn run' or on Knative.")
        entity = version or alias or DEFAULT_ALIAS
        timeout = 120.0 if timeout is None else timeout
        t0 = time.monotonic()
        try:
            resp = self.client.invoke(("actions", function, entity), payload, timeout=timeout)
        except NotFoundError:
            raise NotFoundError(f"'{function}/{entity}' does not exist on {self.name}; "
                                f"see 'mlfn status {function}'.") from None
        act = resp.json()
        if resp.status_code == 202:
            act = self._activation(act.get("activationId") or resp.headers.get("x-openwhisk-activation-id"),
                                   timeout=max(0.0, t0 + timeout - time.monotonic()))
        elapsed = (time.monotonic() - t0) * 1000
        response = act.get("response") or {}
        served = version or self._served_version(function, entity, act)
        if not response.get("success", False):
            result = response.get("result")
            err = result.get("error") if isinstance(result, dict) else None
            raise TargetError(f"{function}/{entity} ({served or 'unknown version'}) answered with an error: "
                              f"{err or response.get('status', 'failure')} (activation {act.get('activationId')}).")
        return InvokeResult(result=response.get("result"), version=served, activation_id=act.get("activationId"),
                            duration_ms=round(elapsed, 1), status_code=resp.status_code)

    def _activation(self, activation_id: str, timeout: float, interval: float = 0.5) -> Optional[dict]:
        def step():
            act = self.client.get("activations", activation_id)
            return act is not None, act, "not finished yet"

        try:
            return poll(step, timeout=timeout, interval=interval, what=f"Activation {activation_id}")
        except TargetError:
            raise TargetError(f"Activation {activation_id} did not finish in time; "
                              f"see 'wsk activation get {activation_id}'.") from None

    def _served_version(self, function: str, entity: str, act: dict) -> Optional[str]:
        """Which version ran: the component activation of a conductor, or the alias's one version."""
        if not codec.unkv(act.get("annotations")).get("conductor"):
            return codec.served_by_alias(self.client.get("actions", function, entity))
        # logs = [router, version, router]; activation records may land a moment later
        ids = list(act.get("logs") or [])
        for aid in ids[1:2] + ids[:1] + ids[2:]:
            try:
                sub = self._activation(aid, timeout=1.5, interval=0.1)
            except TargetError:
                continue
            name = (sub or {}).get("name", "")
            if name.startswith("v") and name[1:].isdigit():
                return name
        return None

    def activations(self, function: str, version: str, since_ms: int) -> list:
        """Activation records of the version action FUNCTION/vN since since_ms (the platform's
        GET activations?name=FUNCTION/vN&since=MS, paged by ACTIVATION_PAGE), oldest first."""
        found, skip = {}, 0
        while True:
            page = self.client.list("activations", {"name": f"{function}/{version}", "since": int(since_ms),
                                                    "limit": ACTIVATION_PAGE, "skip": skip})
            for a in page:
                if int(a.get("start") or 0) >= since_ms:
                    found[a.get("activationId")] = codec.activation_record(a)
            if len(page) < ACTIVATION_PAGE:
                break
            skip += len(page)
        return sorted(found.values(), key=lambda a: a.start_ms)

    # ---- GitOps -----------------------------------------------------------------------------

    def event_wiring(self):
        from mlfn.targets.openwhisk.triggers import OpenWhiskTriggers

        return OpenWhiskTriggers(self.client)

    def render_api(self, function: str, base_path: str, out_dir: str) -> list:
        """api.json for `wsk api create --config-file`: base_path → the default alias's web action."""
        import json

        from mlfn.targets.openwhisk.apigw import gateway_swagger

        doc = gateway_swagger(function, base_path, self.client.resolved_namespace(),
                              self._alias_urls(function, DEFAULT_ALIAS)[1])
        path = Path(out_dir) / "api.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return [str(path)]

    def render(self, spec: VersionSpec, out_dir: str) -> list:
        """A wskdeploy manifest with version v1 and the default alias routed to it."""
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), keep_trailing_newline=True)
        text = env.get_template("manifest.yaml.j2").render(
            function=spec.function, package=spec.function,
            package_annotations=codec.kv({codec.FUNCTION: spec.function}),
            actions=codec.manifest_actions(spec, self.client.namespace))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "manifest.yaml"
        path.write_text(text)
        return [str(path)]


def openwhisk_target(cfg=None, *, apihost: Optional[str] = None, auth: Optional[str] = None,
                     namespace: Optional[str] = None, insecure: bool = False, recorder: Optional[Recorder] = None,
                     props: Optional[WskProps] = None, name: str = "openwhisk", **client_options) -> OpenWhiskTarget:
    """An OpenWhisk target from flags, ~/.wskprops and mlfn.yaml. With a recorder it is a dry
    run: writes go there; without an API host and key it plans offline."""
    if props is None:
        ow_cfg = cfg.deploy.openwhisk if cfg is not None else None
        props = load_wskprops(apihost=apihost, auth=auth, namespace=namespace or getattr(ow_cfg, "namespace", None),
                              insecure=insecure)
    if recorder is None:
        return OpenWhiskTarget(OpenWhiskClient(props, **client_options), name=name)
    inner = OpenWhiskClient(props, **client_options) if props.apihost and props.auth else None
    return OpenWhiskTarget(DryRunOpenWhiskClient(inner, recorder, namespace=props.namespace or "_"), name=name)
