"""The Kubernetes API as the Knative target uses it: Services and Revisions of
serving.knative.dev/v1 (tests/specs/knative/), with retries, the kubeconfig or in-cluster
service account, and waiting for readiness (mlfn.targets.wait).

`KubeClient` sends; `DryRunKubeClient` wraps one with the same methods for a dry run:
reads pass through (and see what the dry run itself planned), writes are recorded and
never sent.

Credentials: `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config` with its context, or the pod's
service account when running inside a cluster (`$KUBERNETES_SERVICE_HOST` set and no
kubeconfig given).
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from mlfn.errors import NotFoundError, TargetError
from mlfn.targets.knative import codec
from mlfn.targets.knative.manifest import API_VERSION, GROUP, LABEL_FUNCTION, LABEL_KN_SERVICE, REVISIONS, SERVICES
from mlfn.targets.recording import Recorder
from mlfn.targets.wait import poll

FIELD_MANAGER = "mlfn"
TRANSIENT_RETRIES = 3  # for 429/5xx answers of the API server
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
EVENTING, TRIGGERS = "eventing.knative.dev", "triggers"


class Conflict(TargetError):
    """HTTP 409 from the API server: someone else changed (or created) the object first."""


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


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the document `patch` turns `target` into."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


def _retry_after(e, attempt: int) -> float:
    try:
        return min(float((e.headers or {}).get("Retry-After")), 5.0)
    except (TypeError, ValueError):
        return min(0.2 * 2 ** attempt, 2.0)


class KubeClient:
    def __init__(self, *, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                 namespace: Optional[str] = None, wait_timeout: float = 300, poll_interval: float = 0.5,
                 error_window: float = 2.0, request_timeout: float = 30.0):
        self.kubeconfig = kubeconfig
        self.context = context
        self._namespace = namespace
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.error_window = error_window
        self.request_timeout = request_timeout
        self._api_obj = None
        self._host = ""
        self._where = "the Kubernetes API"

    @property
    def namespace(self) -> str:
        self._api()
        return self._namespace

    @property
    def where(self) -> str:
        return self._where

    def url(self, kind: str, name: Optional[str] = None) -> str:
        self._api()
        path = f"/apis/{GROUP}/{API_VERSION}/namespaces/{self._namespace}/{kind}"
        return self._host + path + (f"/{name}" if name else "")

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
        self._core_obj = client.CoreV1Api(api_client)  # Secrets (the API key set, mlfn.keys)
        return self._api_obj

    def _call(self, method: str, *args, what: str, **kwargs):
        import urllib3
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        if method.endswith("_namespaced_secret"):  # Secrets are core v1, not custom objects
            api = self._core_obj
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
            raise Conflict(message) from None
        if e.status in (401, 403):
            raise TargetError(
                f"{self._where} refused {what} ({e.status}: {message}); "
                "check the kubeconfig user and its RBAC rights."
            ) from None
        raise TargetError(f"{self._where} rejected {what} ({e.status}): {message}.") from None


    # ---- objects ------------------------------------------------------------------------------

    def get_service(self, service: str) -> Optional[dict]:
        try:
            return self._call("get_namespaced_custom_object", GROUP, API_VERSION, self.namespace, SERVICES, service,
                              what=f"Knative service {service}")
        except NotFoundError:
            return None

    def list_revisions(self, service: str) -> list:
        """mlfn's revisions of service (`<service>-vN`), by number."""
        data = self._call("list_namespaced_custom_object", GROUP, API_VERSION, self.namespace, REVISIONS,
                          label_selector=f"{LABEL_KN_SERVICE}={service}", what=f"revisions of {service}")
        items = [r for r in (data or {}).get("items") or []
                 if codec.version_of(service, (r.get("metadata") or {}).get("name", ""))]
        return sorted(items, key=lambda r: int(codec.version_of(service, r["metadata"]["name"])[1:]))

    def create_service(self, manifest: dict) -> dict:
        return self._call("create_namespaced_custom_object", GROUP, API_VERSION, self.namespace, SERVICES,
                          manifest, field_manager=FIELD_MANAGER,
                          what=f"creating Knative service {manifest['metadata']['name']}")

    def patch_service(self, service: str, patch: dict) -> dict:
        return self._call("patch_namespaced_custom_object", GROUP, API_VERSION, self.namespace, SERVICES,
                          service, patch, field_manager=FIELD_MANAGER, what=f"updating Knative service {service}")

    def delete_service(self, service: str) -> None:
        self._call("delete_namespaced_custom_object", GROUP, API_VERSION, self.namespace, SERVICES, service,
                   what=f"deleting Knative service {service}")

    def delete_revision(self, revision: str) -> None:
        try:
            self._call("delete_namespaced_custom_object", GROUP, API_VERSION, self.namespace, REVISIONS, revision,
                       what=f"deleting revision {revision}")
        except NotFoundError:
            pass

    # ---- Knative Eventing Triggers (mlfn.targets.knative.trigger) ------------------------------

    def trigger_url(self, name: Optional[str] = None) -> str:
        self._api()
        path = f"/apis/{EVENTING}/{API_VERSION}/namespaces/{self._namespace}/{TRIGGERS}"
        return self._host + path + (f"/{name}" if name else "")

    def list_triggers(self, function: str) -> list:
        data = self._call("list_namespaced_custom_object", EVENTING, API_VERSION, self.namespace, TRIGGERS,
                          label_selector=f"{LABEL_FUNCTION}={function}", what=f"triggers of {function}")
        return sorted((data or {}).get("items") or [], key=lambda t: t["metadata"]["name"])

    def apply_trigger(self, manifest: dict) -> dict:
        """Create the Trigger, or replace the one with its name."""
        name = manifest["metadata"]["name"]
        try:
            return self._call("create_namespaced_custom_object", EVENTING, API_VERSION, self.namespace, TRIGGERS,
                              manifest, field_manager=FIELD_MANAGER, what=f"creating trigger {name}")
        except Conflict:
            current = self._call("get_namespaced_custom_object", EVENTING, API_VERSION, self.namespace, TRIGGERS,
                                 name, what=f"trigger {name}")
            body = copy.deepcopy(manifest)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self._call("replace_namespaced_custom_object", EVENTING, API_VERSION, self.namespace, TRIGGERS,
                              name, body, field_manager=FIELD_MANAGER, what=f"updating trigger {name}")

    def delete_trigger(self, name: str) -> None:
        try:
            self._call("delete_namespaced_custom_object", EVENTING, API_VERSION, self.namespace, TRIGGERS, name,
                       what=f"deleting trigger {name}")
        except NotFoundError:
            pass

    def get_secret(self, name: str) -> Optional[dict]:
        try:
            resp = self._call("read_namespaced_secret", name, self.namespace, _preload_content=False,
                              what=f"Secret {name}")
        except NotFoundError:
            return None
        return json.loads(resp.data)

    def put_secret(self, manifest: dict) -> None:
        """Create the Secret, or replace it (its resourceVersion, when set, is the precondition)."""
        name = manifest["metadata"]["name"]
        try:
            self._call("create_namespaced_secret", self.namespace, manifest, what=f"creating Secret {name}")
        except Conflict:
            self._call("replace_namespaced_secret", name, self.namespace, manifest, what=f"updating Secret {name}")

    # ---- waiting (kn's pkg/wait) --------------------------------------------------------------

    def wait(self, service: str, generation: int, *, condition: str = "Ready", revision: Optional[str] = None,
             what: str, progress: Callable[[str], None] = lambda m: None) -> dict:
        """Until observedGeneration >= generation and `condition` is True (and, with revision,
        latestReadyRevisionName == revision). A False condition that lasts error_window fails."""
        false_since: list = []

        def step():
            obj = self.get_service(service)
            if obj is None:
                raise NotFoundError(f"Knative service {service} disappeared while mlfn waited for it.")
            status = obj.get("status") or {}
            if (status.get("observedGeneration") or 0) < generation:
                return False, obj, "waiting for Knative to observe the change"
            cond = codec.condition(obj, condition) or (codec.condition(obj, "Ready") if condition != "Ready" else None)
            state = (cond or {}).get("status")
            if state == "True" and (revision is None or status.get("latestReadyRevisionName") == revision):
                return True, obj, ""
            if state == "False":
                false_since[:] = false_since or [time.monotonic()]
                if time.monotonic() - false_since[0] >= self.error_window:
                    raise TargetError(f"{what} failed: {codec.describe(cond)}.")
            else:
                false_since.clear()
            return False, obj, codec.describe(cond)

        return poll(step, timeout=self.wait_timeout, interval=self.poll_interval, what=what, note=progress)


class DryRunKubeClient:
    """KubeClient's methods; writes go to `recorder`, never to the cluster."""

    def __init__(self, inner: KubeClient, recorder: Recorder):
        self.inner = inner
        self.recorder = recorder
        self._services: dict = {}  # name -> Service as this dry run would leave it (None: deleted)
        self._deleted_revisions: set = set()

    @property
    def namespace(self) -> str:
        return self.inner.namespace

    @property
    def where(self) -> str:
        return self.inner.where

    def get_service(self, service: str) -> Optional[dict]:
        if service in self._services:
            return copy.deepcopy(self._services[service])
        return self.inner.get_service(service)

    def list_revisions(self, service: str) -> list:
        if service in self._services and self._services[service] is None:
            return []
        return [r for r in self.inner.list_revisions(service) if r["metadata"]["name"] not in self._deleted_revisions]

    def create_service(self, manifest: dict) -> dict:
        self.recorder.add("POST", self.inner.url(SERVICES), manifest)
        planned = copy.deepcopy(manifest)
        planned["metadata"].setdefault("generation", 1)
        self._services[manifest["metadata"]["name"]] = planned
        return copy.deepcopy(planned)

    def patch_service(self, service: str, patch: dict) -> dict:
        self.recorder.add("PATCH", self.inner.url(SERVICES, service), patch)
        planned = apply_merge_patch(self.get_service(service), patch)
        planned["metadata"]["generation"] = int(planned["metadata"].get("generation") or 0) + 1
        self._services[service] = planned
        return copy.deepcopy(planned)

    def delete_service(self, service: str) -> None:
        self.recorder.add("DELETE", self.inner.url(SERVICES, service), None)
        self._services[service] = None

    def delete_revision(self, revision: str) -> None:
        self.recorder.add("DELETE", self.inner.url(REVISIONS, revision), None)
        self._deleted_revisions.add(revision)

    def trigger_url(self, name: Optional[str] = None) -> str:
        return self.inner.trigger_url(name)

    def list_triggers(self, function: str) -> list:
        return self.inner.list_triggers(function)

    def apply_trigger(self, manifest: dict) -> dict:
        self.recorder.add("POST", self.inner.trigger_url(), manifest)
        return copy.deepcopy(manifest)

    def delete_trigger(self, name: str) -> None:
        self.recorder.add("DELETE", self.inner.trigger_url(name), None)

    def wait(self, service: str, generation: int, **kw) -> dict:
        return self.get_service(service)  # nothing changes on the cluster, so nothing to wait for

    def get_secret(self, name: str) -> Optional[dict]:
        return self.inner.get_secret(name)

    def put_secret(self, manifest: dict) -> None:
        self.recorder.add("PUT", f"/api/v1/namespaces/{self.namespace}/secrets/{manifest['metadata']['name']}",
                          {"metadata": manifest["metadata"], "data": "<redacted>"})
