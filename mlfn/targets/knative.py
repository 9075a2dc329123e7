"""The Knative target: versions are revisions, aliases are traffic entries and tags.

`KnativeTarget(cfg, kubeconfig=..., context=..., namespace=...)` talks to the Kubernetes
API with the official `kubernetes` client (CustomObjectsApi on
`services.serving.knative.dev` and `revisions.serving.knative.dev`), using the user's
kubeconfig (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`) and context, or the pod's
service account when running inside a cluster (`$KUBERNETES_SERVICE_HOST` set and no
kubeconfig given).

How a deploy goes (state lives on the cluster, so any machine can continue or roll back):

1. read the Service; if a revision already carries this content hash, that is the version
   (idempotent); otherwise render `<service>-v<N>` (mlfn.targets.knative_manifest), with
   `spec.traffic` exactly as it was, and validate it (mlfn.targets.knative_validate);
2. patch the Service with its `resourceVersion` as a precondition (a 409 conflict re-reads
   and retries), then wait like `kn`: `generation == observedGeneration`, the condition
   True or False (a False must last `error_window` seconds, kn's error window), then
   `latestReadyRevisionName` == the new revision. For a new revision the condition is
   `ConfigurationsReady` (the revision half of `Ready`): routes are unchanged at that point,
   so a route that was already broken must not fail the deploy; traffic changes wait for
   `RoutesReady`. A revision that fails leaves every route as it was, and the error names
   the failing condition's reason and message;
3. only then give the new version its own tag `vN` (its own URL). Aliases move with
   `set_traffic` / `promote` / `rollback`, each recorded in the `mlfn.dev/traffic-history`
   annotation.

The alias <-> traffic mapping is documented in mlfn.targets.knative_manifest.
"""
from __future__ import annotations

import copy
import json
import os
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit, urlunsplit

from mlfn.errors import NotFoundError, TargetError
from mlfn.targets import knative_manifest as km
from mlfn.targets.base import (
    DEFAULT_ALIAS,
    Alias,
    DeployResult,
    InvokeResult,
    Status,
    Target,
    Version,
    VersionSpec,
)
from mlfn.targets.knative_validate import validate_service

FIELD_MANAGER = "mlfn"
CONFLICT_RETRIES = 8
CONFLICT_BACKOFF = 0.05  # seconds, doubled per retry, at most 1 s
TRANSIENT_RETRIES = 3  # for 429/5xx answers of the API server
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class _Conflict(Exception):
    """HTTP 409 from the API server: someone else changed the object first."""


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 JSON merge patch that turns old into new (removed keys become null)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old:
            patch[k] = v
        elif old[k] != v:
            patch[k] = merge_patch(old[k], v) if isinstance(old[k], dict) and isinstance(v, dict) else v
    return patch


def _retry_after(e, attempt: int) -> float:
    try:
        return min(float((e.headers or {}).get("Retry-After")), 5.0)
    except (TypeError, ValueError):
        return min(CONFLICT_BACKOFF * 4 * 2 ** attempt, 2.0)


def _condition(obj: dict, kind: str) -> Optional[dict]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return None


def _describe(cond: Optional[dict]) -> str:
    if not cond:
        return "no status reported yet"
    text = cond.get("reason") or cond.get("status") or "Unknown"
    return f"{text}: {cond['message'].rstrip('.')}" if cond.get("message") else text


class KnativeTarget(Target):
    """Knative Serving behind mlfn's Target interface (see the module docstring)."""

    name = "knative"

    def __init__(self, cfg=None, *, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                 namespace: Optional[str] = None, dry_run: bool = False, host: Optional[str] = None,
                 wait_timeout: Optional[float] = None, poll_interval: float = 0.5, error_window: float = 2.0,
                 request_timeout: float = 30.0):
        from mlfn.config import Config

        self.cfg = cfg if cfg is not None else Config()
        kn = self.cfg.deploy.knative
        self.kubeconfig = kubeconfig
        self.context = context or kn.context
        self._namespace = namespace or kn.namespace
        self.dry_run = dry_run
        self.host = host
        self.wait_timeout = wait_timeout if wait_timeout is not None else getattr(kn, "wait_timeout", 300)
        self.poll_interval = poll_interval
        self.error_window = error_window
        self.request_timeout = request_timeout
        self._api_obj = None
        self._host = ""
        self._where = "the Kubernetes API"
        # what a dry run would send, as {"method", "url", "body"} (read by mlfn.deploy)
        self.recorder = types.SimpleNamespace(requests=[])

    # ------------------------------------------------------------------ API plumbing

    @property
    def namespace(self) -> str:
        self._api()
        return self._namespace

    def _api(self):
        if self._api_obj is not None:
            return self._api_obj
        try:
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException
        except ImportError:
            raise TargetError(
                "The knative target needs the Kubernetes client; install it with: pip install 'mlfn[knative]'."
            ) from None
        explicit = self.kubeconfig or os.environ.get("KUBECONFIG")
        try:
            if not explicit and os.environ.get("KUBERNETES_SERVICE_HOST"):
                conf = client.Configuration()
                config.load_incluster_config(client_configuration=conf)
                api_client = client.ApiClient(conf)
                if not self._namespace and os.path.exists(SA_NAMESPACE):
                    self._namespace = Path(SA_NAMESPACE).read_text().strip()
                self._where = f"the in-cluster Kubernetes API ({conf.host})"
            else:
                path = explicit or os.path.expanduser("~/.kube/config")
                paths = [p for p in path.split(os.pathsep) if p]
                if not any(os.path.exists(os.path.expanduser(p)) for p in paths):
                    raise TargetError(
                        f"No kubeconfig at {path}; pass --kubeconfig PATH, set KUBECONFIG, or run inside a cluster."
                    )
                api_client = config.new_client_from_config(config_file=path, context=self.context,
                                                           persist_config=False)
                if not self._namespace:
                    contexts, active = config.list_kube_config_contexts(config_file=path)
                    current = next((c for c in contexts if c["name"] == self.context), None) if self.context else active
                    self._namespace = ((current or {}).get("context") or {}).get("namespace")
                self._where = f"the Kubernetes API at {api_client.configuration.host}"
        except ConfigException as e:
            where = f"context '{self.context}' of " if self.context else ""
            raise TargetError(f"Cannot use {where}kubeconfig {explicit or '~/.kube/config'}: {e}.") from None
        api_client.configuration.retries = 1
        self._host = api_client.configuration.host
        self._namespace = self._namespace or "default"
        self._api_obj = client.CustomObjectsApi(api_client)
        return self._api_obj

    def _call(self, method: str, *args, what: str, **kwargs):
        import urllib3
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                return getattr(api, method)(*args, _request_timeout=self.request_timeout, **kwargs)
            except ApiException as e:
                # overload and failover answers (429, 500 etcd leader change, 503, 504) are retried;
                # every write mlfn sends is safe to repeat (creates answer 409, patches carry a
                # resourceVersion precondition)
                if e.status in (429, 500, 502, 503, 504) and attempt < TRANSIENT_RETRIES:
                    time.sleep(_retry_after(e, attempt))
                    continue
                self._raise(e, what)
            except (OSError, urllib3.exceptions.HTTPError) as e:  # refused, DNS, TLS, timeouts
                raise TargetError(f"Cannot reach {self._where} for {what}: {e}.") from None

    def _raise(self, e, what: str):
        message = e.reason or ""
        try:
            message = json.loads(e.body or "{}").get("message") or message
        except (ValueError, AttributeError):
            pass
        if e.status == 404:
            raise NotFoundError(f"{what} was not found in namespace {self._namespace} ({self._where}).") from None
        if e.status == 409:
            raise _Conflict(message) from None
        if e.status in (401, 403):
            raise TargetError(
                f"{self._where} refused {what} ({e.status}: {message}); "
                "check the kubeconfig user and its RBAC rights."
            ) from None
        raise TargetError(f"{self._where} rejected {what} ({e.status}): {message}.") from None

    def _get(self, service: str, required: bool = True) -> Optional[dict]:
        try:
            return self._call("get_namespaced_custom_object", km.GROUP, km.API_VERSION, self.namespace,
                              km.SERVICES, service, what=f"Knative service {service}")
        except NotFoundError:
            if required:
                raise NotFoundError(
                    f"Knative service {service} does not exist in namespace {self.namespace}; deploy it first "
                    f"(mlfn deploy --target knative)."
                ) from None
            return None

    def _revisions(self, service: str) -> list:
        data = self._call("list_namespaced_custom_object", km.GROUP, km.API_VERSION, self.namespace, km.REVISIONS,
                          label_selector=f"{km.LABEL_KN_SERVICE}={service}", what=f"revisions of {service}")
        items = [r for r in (data or {}).get("items") or []
                 if km.version_of(service, (r.get("metadata") or {}).get("name", ""))]
        return sorted(items, key=lambda r: int(km.version_of(service, r["metadata"]["name"])[1:]))

    def _create(self, manifest: dict) -> dict:
        return self._call("create_namespaced_custom_object", km.GROUP, km.API_VERSION, self.namespace, km.SERVICES,
                          manifest, field_manager=FIELD_MANAGER,
                          what=f"creating Knative service {manifest['metadata']['name']}")

    def _record(self, method: str, service: Optional[str], body: Any) -> None:
        path = f"/apis/{km.GROUP}/{km.API_VERSION}/namespaces/{self.namespace}/{km.SERVICES}"
        self.recorder.requests.append({"method": method, "url": self._host + path + (f"/{service}" if service else ""),
                                       "body": body})

    @staticmethod
    def _patch_body(old: dict, new: dict) -> dict:
        patch = merge_patch({"metadata": old.get("metadata") or {}, "spec": old.get("spec") or {}},
                            {"metadata": new.get("metadata") or {}, "spec": new.get("spec") or {}})
        patch.setdefault("metadata", {})["resourceVersion"] = old["metadata"].get("resourceVersion")
        return patch

    def _patch(self, old: dict, new: dict) -> dict:
        patch = self._patch_body(old, new)
        name = old["metadata"]["name"]
        return self._call("patch_namespaced_custom_object", km.GROUP, km.API_VERSION, self.namespace, km.SERVICES,
                          name, patch, field_manager=FIELD_MANAGER, what=f"updating Knative service {name}")

    def _update(self, service: str, mutate: Callable[[dict], Optional[dict]],
                progress: Callable[[str], None] = lambda m: None) -> tuple:
        """Read, change (mutate returns the new object, or None for no change), validate and
        patch with the read resourceVersion as precondition; a 409 re-reads and retries.
        Returns (old, new, changed)."""
        for attempt in range(CONFLICT_RETRIES):
            old = self._get(service)
            new = mutate(copy.deepcopy(old))
            if new is None or new == old:
                return old, old, False
            validate_service(new, existing=old)
            if self.dry_run:
                self._record("PATCH", service, self._patch_body(old, new))
                return old, new, True
            try:
                return old, self._patch(old, new), True
            except _Conflict:
                progress(f"Knative service {service} changed meanwhile (409 conflict); re-reading and retrying")
                time.sleep(min(CONFLICT_BACKOFF * 2 ** attempt, 1.0))
        raise TargetError(
            f"Knative service {service} kept changing under mlfn ({CONFLICT_RETRIES} conflicts in a row); try again."
        )

    # ------------------------------------------------------------------ waiting (kn's pkg/wait)

    def _wait(self, service: str, generation: int, *, condition: str = "Ready", revision: Optional[str] = None,
              what: str, progress: Callable[[str], None] = lambda m: None) -> dict:
        """Until observedGeneration >= generation and `condition` is True (and, with revision,
        latestReadyRevisionName == revision). A False condition that lasts error_window fails."""
        deadline = time.monotonic() + self.wait_timeout
        false_since: Optional[float] = None
        last_note = None
        cond = None
        while True:
            obj = self._get(service)
            status = obj.get("status") or {}
            if (status.get("observedGeneration") or 0) >= generation:
                cond = _condition(obj, condition) or (_condition(obj, "Ready") if condition != "Ready" else None)
                state = (cond or {}).get("status")
                if state == "True" and (revision is None or status.get("latestReadyRevisionName") == revision):
                    return obj
                if state == "False":
                    false_since = false_since or time.monotonic()
                    if time.monotonic() - false_since >= self.error_window:
                        raise TargetError(f"{what} failed: {_describe(cond)}.")
                else:
                    false_since = None
                note = _describe(cond)
            else:
                note = "waiting for Knative to observe the change"
            if note != last_note:
                progress(f"{what}: {note}")
                last_note = note
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"{what} timed out after {self.wait_timeout:g}s; last state: {_describe(cond)}."
                )
            time.sleep(self.poll_interval)

    # ------------------------------------------------------------------ reading state back

    @staticmethod
    def _tag_urls(obj: dict) -> dict:
        return {t["tag"]: t.get("url") for t in ((obj.get("status") or {}).get("traffic") or []) if t.get("tag")}

    def _version(self, service: str, rev: dict, urls: dict) -> Version:
        meta = rev.get("metadata") or {}
        ann = meta.get("annotations") or {}
        name = km.version_of(service, meta["name"])
        containers = ((rev.get("spec") or {}).get("containers") or [{}])
        return Version(
            name=name,
            number=int(name[1:]),
            image=containers[0].get("image", ""),
            digest=ann.get(km.ANN_DIGEST, ""),
            model_sha256=ann.get(km.ANN_MODEL, ""),
            quantization=ann.get(km.ANN_QUANT, ""),
            pipeline_hash=ann.get(km.ANN_PIPELINE, ""),
            content_hash=ann.get(km.ANN_CONTENT, ""),
            created=ann.get(km.ANN_CREATED) or meta.get("creationTimestamp", ""),
            url=urls.get(name),
        )

    def _aliases(self, service: str, obj: dict) -> list:
        routing = km.Routing.from_traffic(service, (obj.get("spec") or {}).get("traffic"))
        history = km.read_history(obj)
        urls = self._tag_urls(obj)
        out = []
        default = routing.weights(service, None)
        if default is not None:
            prev = km.last_change(history, DEFAULT_ALIAS)
            out.append(Alias(name=DEFAULT_ALIAS, weights=default, previous=(prev or {}).get("from"),
                             url=(obj.get("status") or {}).get("url")))
        for alias in sorted(routing.aliases):
            prev = km.last_change(history, alias)
            out.append(Alias(name=alias, weights=routing.weights(service, alias),
                             previous=(prev or {}).get("from"), url=urls.get(alias)))
        return out

    def _alias(self, service: str, obj: dict, alias: str) -> Alias:
        key = DEFAULT_ALIAS if km.is_default_alias(service, alias) else alias
        for a in self._aliases(service, obj):
            if a.name == key:
                return a
        history = km.read_history(obj)
        prev = km.last_change(history, key)
        return Alias(name=key, weights={}, previous=(prev or {}).get("from"))

    # ------------------------------------------------------------------ Target interface

    def versions(self, function: str) -> list:
        obj = self._get(function)
        urls = self._tag_urls(obj)
        return [self._version(function, r, urls) for r in self._revisions(function)]

    def status(self, function: str) -> Status:
        obj = self._get(function)
        urls = self._tag_urls(obj)
        versions = [self._version(function, r, urls) for r in self._revisions(function)]
        return Status(function=function, target=self.name, versions=versions,
                      aliases=self._aliases(function, obj), url=(obj.get("status") or {}).get("url"))

    def publish(self, spec: VersionSpec, progress: Callable[[str], None] = lambda m: None) -> DeployResult:
        spec = identity(spec)
        service = spec.function
        for attempt in range(CONFLICT_RETRIES):
            obj = self._get(service, required=False)
            if obj is not None:
                break
            manifest = plan_publish(self.cfg, spec, None, [], namespace=self.namespace)[0]
            validate_service(manifest)
            if self.dry_run:
                self._record("POST", None, manifest)
                progress(f"dry run: would create Knative service {service} with version v1")
                return DeployResult(function=service, version=_planned_version(service, manifest), created=True)
            progress(f"Creating Knative service {service} in namespace {self.namespace} (version v1)")
            try:
                created = self._create(manifest)
            except _Conflict:
                continue  # created by someone else meanwhile: deploy onto it
            rev = km.revision_name(service, 1)
            try:
                self._wait(service, created["metadata"].get("generation", 1), condition="ConfigurationsReady",
                           revision=rev, progress=progress, what=f"Version v1 ({rev}) of {service}")
            except TargetError as e:
                raise TargetError(f"{e} The service was created but serves nothing yet; fix the image or settings "
                                  f"and deploy again (that becomes v2), then promote it.") from None
            self._tag_version(service, rev, progress)
            return self._result(service, rev, created=True)

        same = [r for r in self._revisions(service)
                if (r["metadata"].get("annotations") or {}).get(km.ANN_CONTENT) == spec.content_hash]
        working = [r for r in same if (_condition(r, "Ready") or {}).get("status") != "False"]
        if working:
            return self._existing(service, working[-1], obj, progress)
        retry = bool(same)
        if retry:  # a failed revision is no version: deploy the same content again under a new number
            failed = same[-1]
            progress(f"{km.version_of(service, failed['metadata']['name'])} of {service} has this content but "
                     f"failed ({_describe(_condition(failed, 'Ready'))}); deploying it again as a new version")

        number = None
        rev = None

        def change(current: dict) -> Optional[dict]:
            nonlocal number, rev
            manifest, number, _ = plan_publish(self.cfg, spec, current, self._revisions(service),
                                               namespace=self.namespace, force_new=retry)
            rev = km.revision_name(service, number)
            if manifest is None:
                return None
            current["spec"]["template"] = manifest["spec"]["template"]
            current["metadata"].setdefault("annotations", {})[km.ANN_LAST] = str(number)
            return current

        before = km.Routing.from_traffic(service, (obj.get("spec") or {}).get("traffic")).weights(service, None)
        old, new, changed = self._update(service, change, progress)
        if not changed:  # the template already names this content (e.g. a deploy cut short)
            return self._existing_template(service, old, progress)
        if self.dry_run:
            progress(f"dry run: would create version v{number} ({rev}) of {service}; traffic unchanged")
            return DeployResult(function=service, version=_planned_version(service, new), created=True,
                                aliases=self._aliases(service, old))
        progress(f"Created revision {rev} (v{number}); traffic unchanged, waiting for it to become ready")
        self._wait_new_revision(service, new, rev, number, before, progress)
        self._tag_version(service, rev, progress)
        return self._result(service, rev, created=True)

    def _wait_new_revision(self, service, new, rev, number, before, progress):
        try:
            self._wait(service, new["metadata"].get("generation", 0), condition="ConfigurationsReady",
                       revision=rev, progress=progress, what=f"Version v{number} ({rev}) of {service}")
        except TargetError as e:
            routes = " ".join(f"{k}={v}" for k, v in (before or {}).items()) or "none"
            raise TargetError(f"{e} Traffic is unchanged (default alias: {routes}).") from None

    def _existing(self, service: str, rev_obj: dict, obj: dict, progress) -> DeployResult:
        name = rev_obj["metadata"]["name"]
        ready = _condition(rev_obj, "Ready")
        template = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("name")
        if (ready or {}).get("status") != "True" and template == name:  # still coming up (a deploy cut short)
            return self._existing_template(service, obj, progress)
        progress(f"{service} already has this content as {km.version_of(service, name)}; nothing to deploy")
        if not self.dry_run:
            self._tag_version(service, name, progress)
        return self._result(service, name, created=False)

    def _existing_template(self, service: str, obj: dict, progress) -> DeployResult:
        rev = obj["spec"]["template"]["metadata"]["name"]
        number = int(km.version_of(service, rev)[1:])
        if not self.dry_run:
            self._wait(service, obj["metadata"].get("generation", 0), condition="ConfigurationsReady",
                       revision=rev, progress=progress, what=f"Version v{number} ({rev}) of {service}")
            self._tag_version(service, rev, progress)
        return self._result(service, rev, created=False)

    def _tag_version(self, service: str, rev: str, progress) -> None:
        tag = km.version_of(service, rev)

        def change(obj: dict) -> Optional[dict]:
            routing = km.Routing.from_traffic(service, obj["spec"].get("traffic"))
            if routing.version_tags.get(tag) == rev:
                return None
            routing.version_tags[tag] = rev
            obj["spec"]["traffic"] = routing.to_traffic()
            return obj

        _, new, changed = self._update(service, change, progress)
        if changed and not self.dry_run:
            try:
                self._wait(service, new["metadata"].get("generation", 0), condition="RoutesReady", progress=progress,
                           what=f"Route for tag {tag} of {service}")
            except TargetError as e:  # the version is ready; only its own URL is not (yet)
                progress(f"{e} {tag} is deployed but has no URL of its own until the routes are ready.")

    def _result(self, service: str, rev: str, created: bool) -> DeployResult:
        obj = self._get(service)
        urls = self._tag_urls(obj)
        revs = {r["metadata"]["name"]: r for r in self._revisions(service)}
        if rev in revs:
            version = self._version(service, revs[rev], urls)
        else:
            version = _planned_version(service, obj)
        return DeployResult(function=service, version=version, created=created, aliases=self._aliases(service, obj))

    def set_traffic(self, function: str, alias: str, weights: dict, web: bool = False) -> Alias:
        from mlfn.traffic import validate_weights

        weights = validate_weights(dict(weights))
        default = km.is_default_alias(function, alias)
        key = DEFAULT_ALIAS if default else alias
        if not default:
            km.check_alias_name(alias)
        self._check_versions(function, [v for v, w in weights.items() if w > 0])

        def change(obj: dict) -> Optional[dict]:
            routing = km.Routing.from_traffic(function, obj["spec"].get("traffic"))
            before = routing.weights(function, key)
            routing.assign(function, key, weights)
            after = routing.weights(function, key)
            if before == after:
                return None
            obj["spec"]["traffic"] = routing.to_traffic()
            history = km.record(km.read_history(obj), key, before, after)
            _set_history(obj, history)
            return obj

        return self._apply_traffic(function, key, change, f"Alias {key} of {function}")

    def rollback(self, function: str, alias: str = DEFAULT_ALIAS) -> Alias:
        key = DEFAULT_ALIAS if km.is_default_alias(function, alias) else alias
        obj = self._get(function)
        entry = km.last_change(km.read_history(obj), key)
        if entry is None:
            raise TargetError(f"Alias {key} of {function} has no earlier assignment to roll back to.")
        if entry.get("from") is None and key == DEFAULT_ALIAS:
            raise TargetError(f"The default alias of {function} has no earlier assignment to roll back to.")
        self._check_versions(function, [v for v, w in (entry.get("from") or {}).items() if w > 0],
                             purpose="roll back to")

        def change(current: dict) -> Optional[dict]:
            history = km.read_history(current)
            last = km.last_change(history, key)
            if last is None:
                raise TargetError(f"Alias {key} of {function} has no earlier assignment to roll back to.")
            routing = km.Routing.from_traffic(function, current["spec"].get("traffic"))
            routing.assign(function, key, last.get("from"))
            history.remove(last)
            current["spec"]["traffic"] = routing.to_traffic()
            _set_history(current, history)
            return current

        return self._apply_traffic(function, key, change, f"Rollback of alias {key} of {function}")

    def _apply_traffic(self, function: str, key: str, change, what: str) -> Alias:
        old, new, changed = self._update(function, change)
        if changed and not self.dry_run:
            new = self._wait(function, new["metadata"].get("generation", 0), condition="RoutesReady", what=what)
        return self._alias(function, new, key)

    def _check_versions(self, function: str, versions: list, purpose: str = "route traffic to") -> None:
        revs = {km.version_of(function, r["metadata"]["name"]): r for r in self._revisions(function)}
        for v in versions:
            if v not in revs:
                known = ", ".join(revs) or "none"
                raise NotFoundError(f"{function} has no version {v} to {purpose} (versions: {known}).")
            ready = _condition(revs[v], "Ready")
            if ready is not None and ready.get("status") == "False":
                raise TargetError(f"Cannot {purpose} {v} of {function}: its revision failed ({_describe(ready)}).")

    def delete(self, function: str, version: Optional[str] = None, force: bool = False) -> list:
        if version is None:
            obj = self._get(function)
            names = [km.version_of(function, r["metadata"]["name"]) for r in self._revisions(function)]
            if self.dry_run:
                self._record("DELETE", function, None)
            else:
                self._call("delete_namespaced_custom_object", km.GROUP, km.API_VERSION, self.namespace, km.SERVICES,
                           function, what=f"deleting Knative service {function}")
            return names or [obj["metadata"]["name"]]
        from mlfn.traffic import version_number

        number = version_number(version)
        rev = km.revision_name(function, number)
        obj = self._get(function)
        if rev not in {r["metadata"]["name"] for r in self._revisions(function)}:
            raise NotFoundError(f"{function} has no version {version}.")
        if ((obj["spec"].get("template") or {}).get("metadata") or {}).get("name") == rev:
            raise TargetError(
                f"{version} is the latest version of {function} (the Service's template, Knative would recreate it); "
                f"deploy a newer version first, or delete the whole function."
            )

        def change(current: dict) -> Optional[dict]:
            routing = km.Routing.from_traffic(function, current["spec"].get("traffic"))
            routed = routing.routed(rev)
            if "default" in routed:
                raise TargetError(
                    f"{version} of {function} still takes {routing.default[rev]}% of the default alias; "
                    f"move that traffic first (mlfn traffic {function} ...)."
                )
            if routed and not force:
                raise TargetError(
                    f"{version} of {function} is routed by alias {', '.join(routed)}; move the alias first, "
                    f"or pass --force to remove the alias with the version."
                )
            history = km.read_history(current)
            for alias in routed:
                history = km.record(history, alias, {version: 100}, None)
                routing.assign(function, alias, None)
            routing.version_tags.pop(version, None)
            current["spec"]["traffic"] = routing.to_traffic()
            if routed:
                _set_history(current, history)
            return current

        _, new, changed = self._update(function, change)
        if self.dry_run:
            self.recorder.requests.append({"method": "DELETE", "body": None, "url": self._host + (
                f"/apis/{km.GROUP}/{km.API_VERSION}/namespaces/{self.namespace}/{km.REVISIONS}/{rev}")})
            return [version]
        if changed:
            self._wait(function, new["metadata"].get("generation", 0), condition="RoutesReady",
                       what=f"Removing {version} from the routes of {function}")
        try:
            self._call("delete_namespaced_custom_object", km.GROUP, km.API_VERSION, self.namespace, km.REVISIONS, rev,
                       what=f"deleting revision {rev}")
        except NotFoundError:
            pass
        return [version]

    def invoke(self, function: str, payload: Any, alias: Optional[str] = None,
               version: Optional[str] = None, timeout: Optional[float] = None) -> InvokeResult:
        """POST payload to `<url>/predict` of the default alias, a named alias (its tag URL) or
        a version (tag `vN`). With `host` (an ingress address, e.g. `127.0.0.1:31080`) the
        request goes there with the URL's host name in the Host header. A 4xx/5xx answer is a
        TargetError carrying the function's `{"error": ...}` message. `timeout` defaults to
        the function's own timeout plus 10 s (scale-from-zero included)."""
        import requests

        if timeout is None:
            timeout = max(self.request_timeout, self.cfg.deploy.timeout / 1000 + 10)

        obj = self._get(function)
        routing = km.Routing.from_traffic(function, (obj.get("spec") or {}).get("traffic"))
        urls = self._tag_urls(obj)
        if version is not None:
            url, served, name = urls.get(version), version, f"version {version}"
        elif not km.is_default_alias(function, alias):
            weights = routing.weights(function, alias)
            if weights is None:
                raise NotFoundError(f"{function} has no alias {alias} (aliases: "
                                    f"{', '.join(a.name for a in self._aliases(function, obj)) or 'none'}).")
            url, served, name = urls.get(alias), next(iter(weights)), f"alias {alias}"
        else:
            weights = routing.weights(function, None) or {}
            url = (obj.get("status") or {}).get("url")
            served = next(iter(weights)) if len(weights) == 1 else None
            name = "the default alias"
        if not url:
            raise TargetError(f"{function} has no URL for {name} yet; check 'mlfn status {function} --target knative'.")
        target, headers = _address(url.rstrip("/") + "/predict", self.host)
        if isinstance(payload, (bytes, bytearray)):
            headers["Content-Type"] = _image_type(bytes(payload))
            kwargs = {"data": bytes(payload)}
        else:
            kwargs = {"json": payload}
        t0 = time.perf_counter()
        try:
            resp = requests.post(target, headers=headers, timeout=timeout, **kwargs)
        except requests.RequestException as e:
            raise TargetError(f"Cannot reach {function} ({name}) at {target}: {e}.") from None
        ms = (time.perf_counter() - t0) * 1000
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text[:500]}
        if resp.status_code >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            raise TargetError(f"{function} ({name}) answered HTTP {resp.status_code}: {err or resp.reason}.")
        return InvokeResult(result=body, version=served, duration_ms=round(ms, 2), status_code=resp.status_code)

    def render(self, spec: VersionSpec, out_dir: str) -> list:
        """Write `<out_dir>/<function>.knative.yaml`; an existing file is the previous state
        (GitOps): same content keeps it, new content adds v<N+1> with traffic unchanged."""
        import yaml

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{spec.function}.knative.yaml"
        existing = None
        if path.exists():
            try:
                existing = yaml.safe_load(path.read_text())
            except yaml.YAMLError as e:
                raise TargetError(f"{path} is not valid YAML: {e}.") from None
        manifest, _, _ = plan_publish(self.cfg, spec, existing, [], namespace=self._namespace)
        if manifest is None:
            return [str(path)]
        validate_service(manifest, existing=existing)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return [str(path)]


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
    """(manifest or None when the template already holds this content, version number, routing).
    force_new: a new number even when the template holds this content (its revision failed)."""
    spec = identity(spec)
    service = spec.function
    if existing is None:
        number = 1
        routing = km.Routing(default={km.revision_name(service, 1): 100})  # the tag v1 follows once it is ready
        history = km.record([], DEFAULT_ALIAS, None, {"v1": 100})
        manifest = km.render_service(cfg, spec, 1, namespace=namespace, traffic=routing.to_traffic(),
                                     service_annotations={km.ANN_HISTORY: json.dumps(history, separators=(",", ":"))})
        return manifest, 1, routing
    meta = existing.get("metadata") or {}
    tpl = (existing.get("spec") or {}).get("template") or {}
    tpl_rev = (tpl.get("metadata") or {}).get("name") or ""
    routing = km.Routing.from_traffic(service, (existing.get("spec") or {}).get("traffic"))
    tpl_hash = ((tpl.get("metadata") or {}).get("annotations") or {}).get(km.ANN_CONTENT)
    if tpl_hash == spec.content_hash and km.version_of(service, tpl_rev) and not force_new:
        return None, int(km.version_of(service, tpl_rev)[1:]), routing
    numbers = [int(km.version_of(service, r["metadata"]["name"])[1:]) for r in revisions]
    if km.version_of(service, tpl_rev):
        numbers.append(int(km.version_of(service, tpl_rev)[1:]))
    try:
        numbers.append(int((meta.get("annotations") or {}).get(km.ANN_LAST) or 0))
    except ValueError:
        pass
    number = max(numbers, default=0) + 1
    manifest = km.render_service(cfg, spec, number, namespace=namespace or meta.get("namespace"),
                                 traffic=routing.to_traffic(), service_annotations=meta.get("annotations") or {})
    # keep what the cluster (or the GitOps file) has beyond mlfn's own keys
    merged = copy.deepcopy(existing)
    merged.pop("status", None)
    merged.setdefault("metadata", {}).setdefault("annotations", {}).update(manifest["metadata"]["annotations"])
    merged["metadata"].setdefault("labels", {}).update(manifest["metadata"]["labels"])
    merged.setdefault("spec", {})["template"] = manifest["spec"]["template"]
    merged["spec"]["traffic"] = routing.to_traffic()
    return merged, number, routing


def _set_history(obj: dict, history: list) -> None:
    obj["metadata"].setdefault("annotations", {})[km.ANN_HISTORY] = json.dumps(history, separators=(",", ":"))


def _planned_version(service: str, obj: dict) -> Version:
    tpl = obj["spec"]["template"]
    ann = tpl["metadata"].get("annotations") or {}
    name = km.version_of(service, tpl["metadata"]["name"])
    return Version(name=name, number=int(name[1:]), image=tpl["spec"]["containers"][0]["image"],
                   digest=ann.get(km.ANN_DIGEST, ""), model_sha256=ann.get(km.ANN_MODEL, ""),
                   quantization=ann.get(km.ANN_QUANT, ""), pipeline_hash=ann.get(km.ANN_PIPELINE, ""),
                   content_hash=ann.get(km.ANN_CONTENT, ""), created=ann.get(km.ANN_CREATED, ""))


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
