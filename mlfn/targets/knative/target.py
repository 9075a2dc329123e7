"""Knative Serving behind the Target interface: versions are revisions, aliases are traffic
entries and tags (codec.py); the Service is rendered by manifest.py, checked by
validate.py and sent by client.py.

How a publish goes (state lives on the cluster, so any machine can continue or roll back):

1. read the Service; if a revision already carries this content hash, that is the version
   (idempotent); otherwise render `<service>-v<N>` with `spec.traffic` exactly as it was,
   and validate it;
2. patch the Service with its `resourceVersion` as a precondition (a 409 conflict re-reads
   and retries), then wait like `kn`: for a new revision the condition is
   `ConfigurationsReady` (routes are unchanged at that point, so a route that was already
   broken must not fail the deploy); traffic changes wait for `RoutesReady`. A revision
   that fails leaves every route as it was, and the error names the failing condition;
3. only then give the new version its own tag `vN` (its own URL).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit, urlunsplit

from mlfn.errors import ConfigError, NotFoundError, TargetError
from mlfn.targets.interface import (DEFAULT_ALIAS, AliasRecord, AliasWritten, InvokeResult, Progress, Published,
                                    State, Target, VersionSpec, quiet)
from mlfn.targets.knative import codec
from mlfn.targets.knative.client import Conflict, DryRunKubeClient, KubeClient, merge_patch
from mlfn.targets.knative.manifest import identity, plan_publish
from mlfn.targets.knative.validate import validate_service
from mlfn.targets.recording import Recorder

CONFLICT_RETRIES = 8
CONFLICT_BACKOFF = 0.05  # seconds, doubled per retry, at most 1 s


class KnativeTarget(Target):
    """`client` is a KubeClient or its dry-run wrapper; `host` an ingress address for invoke."""

    name = "knative"

    def __init__(self, cfg, client, host: Optional[str] = None, namespace: Optional[str] = None):
        self.cfg = cfg
        self.client = client
        self.host = host
        self.render_namespace = namespace or cfg.deploy.knative.namespace  # for `mlfn render` (no cluster)

    # ------------------------------------------------------------------ API keys: a Secret mounted by reference

    def read_key_set(self, function: str) -> dict:
        from mlfn.targets.knative.manifest import auth_secret_name, key_set_of_secret

        return key_set_of_secret(self.client.get_secret(auth_secret_name(self.cfg, function)))

    def write_key_set(self, function: str, key_set: dict) -> None:
        from mlfn.targets.knative.manifest import auth_secret_name, key_set_secret

        self.client.put_secret(key_set_secret(auth_secret_name(self.cfg, function), function, key_set))

    # ------------------------------------------------------------------ plumbing

    def _service(self, service: str) -> dict:
        obj = self.client.get_service(service)
        if obj is None:
            raise NotFoundError(f"Knative service {service} does not exist in namespace {self.client.namespace}; "
                                f"deploy it first (mlfn deploy --target knative).")
        return obj

    def _update(self, service: str, mutate: Callable[[dict], Optional[dict]], progress: Progress = quiet) -> tuple:
        """Read, change (mutate returns the new object, or None for no change), validate and
        patch with the read resourceVersion as precondition; a 409 re-reads and retries.
        Returns (old, new, changed)."""
        for attempt in range(CONFLICT_RETRIES):
            old = self._service(service)
            new = mutate(copy.deepcopy(old))
            if new is None or new == old:
                return old, old, False
            validate_service(new, existing=old)
            patch = merge_patch({"metadata": old.get("metadata") or {}, "spec": old.get("spec") or {}},
                                {"metadata": new.get("metadata") or {}, "spec": new.get("spec") or {}})
            patch.setdefault("metadata", {})["resourceVersion"] = old["metadata"].get("resourceVersion")
            try:
                return old, self.client.patch_service(service, patch), True
            except Conflict:
                progress(f"Knative service {service} changed meanwhile (409 conflict); re-reading and retrying")
                time.sleep(min(CONFLICT_BACKOFF * 2 ** attempt, 1.0))
        raise TargetError(
            f"Knative service {service} kept changing under mlfn ({CONFLICT_RETRIES} conflicts in a row); try again."
        )

    def _wait_routes(self, service: str, obj: dict, what: str, progress: Progress = quiet) -> dict:
        return self.client.wait(service, obj["metadata"].get("generation", 0), condition="RoutesReady", what=what,
                                progress=progress)

    # ------------------------------------------------------------------ reading

    def _state(self, service: str, obj: dict) -> State:
        urls = codec.tag_urls(obj)
        template = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("name", "")
        versions = [codec.version_from(service, r, urls, template) for r in self.client.list_revisions(service)]
        return State(function=service, exists=True, versions=versions, aliases=codec.aliases_from(service, obj),
                     url=(obj.get("status") or {}).get("url"))

    def read(self, function: str, missing_ok: bool = False) -> State:
        obj = self.client.get_service(function)
        if obj is None and missing_ok:
            return State(function=function, exists=False)
        return self._state(function, obj if obj is not None else self._service(function))

    # ------------------------------------------------------------------ publishing

    def event_wiring(self):
        from mlfn.targets.knative.trigger import KnativeTriggers

        return KnativeTriggers(self.client, self.render_namespace)

    def check_image(self, image: str) -> None:
        check_pullable(image)

    def publish(self, spec: VersionSpec, progress: Progress = quiet) -> Published:
        check_pullable(spec.image)
        spec = identity(spec)
        service = spec.function
        for _ in range(CONFLICT_RETRIES):
            obj = self.client.get_service(service)
            if obj is not None:
                return self._publish_onto(spec, obj, progress)
            manifest = plan_publish(self.cfg, spec, None, [], namespace=self.client.namespace)[0]
            validate_service(manifest)
            progress(f"Creating Knative service {service} in namespace {self.client.namespace} (version v1)")
            try:
                created = self.client.create_service(manifest)
            except Conflict:
                continue  # created by someone else meanwhile: deploy onto it
            rev = codec.revision_name(service, 1)
            try:
                self.client.wait(service, created["metadata"].get("generation", 1), condition="ConfigurationsReady",
                                 revision=rev, progress=progress, what=f"Version v1 ({rev}) of {service}")
            except TargetError as e:
                raise TargetError(f"{e} The service was created but serves nothing yet; fix the image or settings "
                                  f"and deploy again (that becomes v2), then promote it.") from None
            return self._tagged(service, rev, created=True, progress=progress)
        raise TargetError(f"Knative service {service} kept changing under mlfn; try again.")

    def _publish_onto(self, spec: VersionSpec, obj: dict, progress: Progress) -> Published:
        service = spec.function
        same = [r for r in self.client.list_revisions(service)
                if (r["metadata"].get("annotations") or {}).get(codec.VERSION_FIELDS.key("content_hash"))
                == spec.content_hash]
        working = [r for r in same if (codec.condition(r, "Ready") or {}).get("status") != "False"]
        if working:
            return self._existing(service, working[-1], obj, progress)
        if same:  # a failed revision is no version: deploy the same content again under a new number
            progress(f"{codec.version_of(service, same[-1]['metadata']['name'])} of {service} has this content but "
                     f"failed ({codec.describe(codec.condition(same[-1], 'Ready'))}); deploying it again as a new "
                     "version")
        planned: dict = {}

        def change(current: dict) -> Optional[dict]:
            manifest, planned["number"] = plan_publish(self.cfg, spec, current, self.client.list_revisions(service),
                                                       namespace=self.client.namespace, force_new=bool(same))
            if manifest is None:
                return None
            current["spec"]["template"] = manifest["spec"]["template"]
            current["metadata"].setdefault("annotations", {})[codec.ANN_LAST] = str(planned["number"])
            return current

        before = codec.Routing.from_traffic(service, (obj.get("spec") or {}).get("traffic")).weights(service, None)
        old, new, changed = self._update(service, change, progress)
        if not changed:  # the template already names this content (e.g. a deploy cut short)
            return self._existing_template(service, old, progress)
        number = planned["number"]
        rev = codec.revision_name(service, number)
        progress(f"Created revision {rev} (v{number}); traffic unchanged, waiting for it to become ready")
        try:
            self.client.wait(service, new["metadata"].get("generation", 0), condition="ConfigurationsReady",
                             revision=rev, progress=progress, what=f"Version v{number} ({rev}) of {service}")
        except TargetError as e:
            routes = " ".join(f"{k}={v}" for k, v in (before or {}).items()) or "none"
            raise TargetError(f"{e} Traffic is unchanged (default alias: {routes}).") from None
        return self._tagged(service, rev, created=True, progress=progress)

    def _existing(self, service: str, rev_obj: dict, obj: dict, progress: Progress) -> Published:
        name = rev_obj["metadata"]["name"]
        template = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("name")
        if (codec.condition(rev_obj, "Ready") or {}).get("status") != "True" and template == name:
            return self._existing_template(service, obj, progress)  # still coming up (a deploy cut short)
        progress(f"{service} already has this content as {codec.version_of(service, name)}; nothing to deploy")
        return self._tagged(service, name, created=False, progress=progress)

    def _existing_template(self, service: str, obj: dict, progress: Progress) -> Published:
        rev = obj["spec"]["template"]["metadata"]["name"]
        number = int(codec.version_of(service, rev)[1:])
        self.client.wait(service, obj["metadata"].get("generation", 0), condition="ConfigurationsReady",
                         revision=rev, progress=progress, what=f"Version v{number} ({rev}) of {service}")
        return self._tagged(service, rev, created=False, progress=progress)

    def _tagged(self, service: str, rev: str, created: bool, progress: Progress) -> Published:
        """Give the version its own tag vN (its own URL), then read it back."""
        tag = codec.version_of(service, rev)

        def change(obj: dict) -> Optional[dict]:
            routing = codec.Routing.from_traffic(service, obj["spec"].get("traffic"))
            if routing.version_tags.get(tag) == rev:
                return None
            routing.version_tags[tag] = rev
            obj["spec"]["traffic"] = routing.to_traffic()
            return obj

        _, new, changed = self._update(service, change, progress)
        if changed:
            try:
                new = self._wait_routes(service, new, f"Route for tag {tag} of {service}", progress)
            except TargetError as e:  # the version is ready; only its own URL is not (yet)
                progress(f"{e} {tag} is deployed but has no URL of its own until the routes are ready.")
        revs = {r["metadata"]["name"]: r for r in self.client.list_revisions(service)}
        urls = codec.tag_urls(new)
        planned = revs.get(rev) or {"metadata": new["spec"]["template"]["metadata"],
                                    "spec": new["spec"]["template"]["spec"]}
        return Published(codec.version_from(service, planned, urls), created=created)

    # ------------------------------------------------------------------ aliases

    def _refuse_failed(self, function: str, weights: dict) -> None:
        """A failed revision is no version to route to (that they exist is the policy's check)."""
        revs = {codec.version_of(function, r["metadata"]["name"]): r for r in self.client.list_revisions(function)}
        for v in (v for v, w in weights.items() if w > 0 and v in revs):
            ready = codec.condition(revs[v], "Ready")
            if ready is not None and ready.get("status") == "False":
                raise TargetError(f"Cannot route traffic to {v} of {function}: its revision failed "
                                  f"({codec.describe(ready)}).")

    def write_alias(self, function: str, record: AliasRecord, progress: Progress = quiet) -> AliasWritten:
        """Knative serves HTTP on every alias: `web` and `require_auth` (OpenWhisk's) do not apply."""
        key = DEFAULT_ALIAS if codec.is_default_alias(function, record.name) else record.name
        if key != DEFAULT_ALIAS:
            codec.check_alias_name(key)
        self._refuse_failed(function, record.weights)

        def change(obj: dict) -> Optional[dict]:
            routing = codec.Routing.from_traffic(function, obj["spec"].get("traffic"))
            routing.assign(function, key, record.weights)
            obj["spec"]["traffic"] = routing.to_traffic()
            histories = codec.read_histories(obj)
            histories[key] = list(record.history)
            codec.write_histories(obj, histories)
            rollouts = codec.read_rollouts(obj)
            rollouts[key] = list(record.rollouts)
            codec.write_rollouts(obj, rollouts)
            return obj

        return AliasWritten(self._apply(function, key, change, f"Alias {key} of {function}", progress))

    def _apply(self, function: str, key: str, change, what: str, progress: Progress = quiet):
        old, new, changed = self._update(function, change, progress)
        if changed and (old["spec"].get("traffic") != new["spec"].get("traffic")):
            new = self._wait_routes(function, new, what, progress)
        return codec.aliases_from(function, new).get(key)

    def delete_alias(self, function: str, alias: str) -> None:
        if codec.is_default_alias(function, alias):
            raise TargetError(f"The default alias of {function} cannot be deleted: {codec.DEFAULT_KEPT}.")

        def change(obj: dict) -> Optional[dict]:
            routing = codec.Routing.from_traffic(function, obj["spec"].get("traffic"))
            routing.assign(function, alias, None)
            obj["spec"]["traffic"] = routing.to_traffic()
            histories = codec.read_histories(obj)
            histories.pop(alias, None)
            codec.write_histories(obj, histories)
            rollouts = codec.read_rollouts(obj)
            rollouts.pop(alias, None)
            codec.write_rollouts(obj, rollouts)
            return obj

        self._apply(function, alias, change, f"Removing alias {alias} of {function}")

    def delete_version(self, function: str, version: str) -> None:
        """Drop the version's own tag from the routes, then delete its revision."""

        def change(obj: dict) -> Optional[dict]:
            routing = codec.Routing.from_traffic(function, obj["spec"].get("traffic"))
            if version not in routing.version_tags:
                return None
            routing.version_tags.pop(version)
            obj["spec"]["traffic"] = routing.to_traffic()
            return obj

        self._apply(function, version, change, f"Removing {version} from the routes of {function}")
        from mlfn.traffic import version_number

        self.client.delete_revision(codec.revision_name(function, version_number(version)))

    def delete_function(self, function: str, state: State) -> list:
        self.client.delete_service(function)
        return [v.name for v in state.versions] or [function]

    # ------------------------------------------------------------------ invoking

    def invoke(self, function: str, payload: Any, alias: Optional[str] = None,
               version: Optional[str] = None, timeout: Optional[float] = None,
               protocol: str = "predict") -> InvokeResult:
        """POST payload to `<url>/predict` of the default alias, a named alias (its tag URL) or
        a version (tag `vN`). With `host` (an ingress address, e.g. `127.0.0.1:31080`) the
        request goes there with the URL's host name in the Host header. `timeout` defaults to
        the function's own timeout plus 10 s (scale-from-zero included)."""
        url, served, name = self._route(function, alias, version)
        if timeout is None:
            timeout = max(30.0, self.cfg.deploy.timeout / 1000 + 10)
        if protocol == "grpc":  # serving.grpc: true named the port h2c
            from mlfn.client import invoke_url

            res = invoke_url(url, payload, protocol="grpc", timeout=timeout, host=self.host)
            return InvokeResult(result=res["result"], version=served, duration_ms=res["duration_ms"], status_code=200)
        return _post(f"{function} ({name})", url.rstrip("/") + "/predict", self.host, payload, timeout, served)

    def _route(self, function: str, alias: Optional[str], version: Optional[str]) -> tuple:
        """(URL, the version that serves or None, what to call it in messages)."""
        obj = self._service(function)
        urls = codec.tag_urls(obj)
        aliases = codec.aliases_from(function, obj)
        if version is not None:
            url, served, name = urls.get(version), version, f"version {version}"
        elif not codec.is_default_alias(function, alias):
            if alias not in aliases:
                raise NotFoundError(f"{function} has no alias {alias} (aliases: {', '.join(aliases) or 'none'}).")
            url, served, name = urls.get(alias), next(iter(aliases[alias].weights)), f"alias {alias}"
        else:
            weights = aliases[DEFAULT_ALIAS].weights if DEFAULT_ALIAS in aliases else {}
            url = (obj.get("status") or {}).get("url")
            served = next(iter(weights)) if len(weights) == 1 else None
            name = "the default alias"
        if not url:
            raise TargetError(f"{function} has no URL for {name} yet; check 'mlfn status {function} --target knative'.")
        return url, served, name

    # ------------------------------------------------------------------ GitOps

    def render(self, spec: VersionSpec, out_dir: str) -> list:
        """Write `<out_dir>/<function>.knative.yaml`; an existing file is the previous state
        (GitOps): same content keeps it, new content adds v<N+1> with traffic unchanged."""
        import yaml

        check_pullable(spec.image)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{spec.function}.knative.yaml"
        existing = None
        if path.exists():
            try:
                existing = yaml.safe_load(path.read_text())
            except yaml.YAMLError as e:
                raise TargetError(f"{path} is not valid YAML: {e}.") from None
        manifest, _ = plan_publish(self.cfg, spec, existing, [], namespace=self.render_namespace)
        if manifest is None:
            return [str(path)]
        validate_service(manifest, existing=existing)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return [str(path)]


def knative_target(cfg=None, *, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                   namespace: Optional[str] = None, host: Optional[str] = None,
                   recorder: Optional[Recorder] = None, **client_options):
    """A Knative target from flags and mlfn.yaml (deploy.knative). With a recorder it is a dry
    run: reads go to the cluster, writes to the recorder."""
    from mlfn.config import Config

    cfg = cfg if cfg is not None else Config()
    kn = cfg.deploy.knative
    client_options.setdefault("wait_timeout", getattr(kn, "wait_timeout", 300))
    client = KubeClient(kubeconfig=kubeconfig, context=context or kn.context, namespace=namespace or kn.namespace,
                        **client_options)
    if recorder is not None:
        client = DryRunKubeClient(client, recorder)
    return KnativeTarget(cfg, client, host=host, namespace=namespace)


def check_pullable(image: str) -> str:
    """A cluster pulls images from a registry: a reference without a registry host (the local
    build tag mlfn/NAME:HASH) cannot be what a Service runs. Returns image."""
    first = image.split("/", 1)[0] if "/" in image else ""
    if not ("." in first or ":" in first or first == "localhost"):
        raise ConfigError(f"The image {image} is a local tag that no cluster can pull; set deploy.registry in "
                          "mlfn.yaml (or pass --push REGISTRY/REPO to deploy, --image to render) so the Service "
                          "references a pushed image.")
    return image


def _post(what: str, url: str, host: Optional[str], payload: Any, timeout: float, served) -> InvokeResult:
    import requests

    target, headers = _address(url, host)
    if isinstance(payload, (bytes, bytearray)):
        headers["Content-Type"] = _image_type(bytes(payload))
        kwargs = {"data": bytes(payload)}
    else:
        kwargs = {"json": payload}
    t0 = time.perf_counter()
    try:
        resp = requests.post(target, headers=headers, timeout=timeout, **kwargs)
    except requests.RequestException as e:
        raise TargetError(f"Cannot reach {what} at {target}: {e}.") from None
    ms = (time.perf_counter() - t0) * 1000
    try:
        body = resp.json()
    except ValueError:
        body = {"error": resp.text[:500]}
    if resp.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        raise TargetError(f"{what} answered HTTP {resp.status_code}: {err or resp.reason}.")
    return InvokeResult(result=body, version=served, duration_ms=round(ms, 2), status_code=resp.status_code)


def _address(url: str, host: Optional[str]):
    """Send to `host` (an ingress address) with the URL's host in the Host header."""
    if not host:
        return url, {}
    parts = urlsplit(url)
    via = urlsplit(host if "://" in host else f"{parts.scheme}://{host}")
    return urlunsplit((via.scheme, via.netloc, parts.path, parts.query, "")), {"Host": parts.netloc}


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"
