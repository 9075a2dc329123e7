"""The OpenWhisk REST API as the OpenWhisk target uses it: get / put / delete / invoke on
paths under /api/v1/namespaces/NAMESPACE (tests/specs/openwhisk/apiv1swagger.json).

`OpenWhiskClient` sends (retries, auth, TLS, error messages); `DryRunOpenWhiskClient`
wraps one with the same methods for a dry run: reads pass through when an endpoint is
configured (and see what the dry run itself planned), writes are recorded with secrets
redacted and never sent. When nothing can be read it raises `Unreadable` and the target
plans blind.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable, Optional
from urllib.parse import quote

from mlfn.errors import NotFoundError, TargetError
from mlfn.targets.http import HttpClient, safe_url
from mlfn.targets.openwhisk.wskprops import WskProps
from mlfn.targets.recording import Recorder, redact

log = logging.getLogger(__name__)

SECRET_KEYS = ("require-whisk-auth", "mlfn_auth")  # mlfn_auth: the API key set (hashes)
OFFLINE_BASE = "https://OPENWHISK_APIHOST"


def _error_text(resp) -> str:
    try:
        body = resp.json()
        return str(body.get("error") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        return f"HTTP {resp.status_code} {resp.text[:200]}"


class Unreadable(TargetError):
    """A dry run could not read the platform (no endpoint, or it does not answer)."""


class OpenWhiskClient:
    def __init__(self, props: WskProps, *, attempts: int = 5, backoff: float = 0.2, timeout: float = 65.0,
                 sleep: Callable[[float], None] = time.sleep,
                 down_hint: Callable[[str], Optional[str]] = lambda base: None):
        self.props = props
        self.base = props.base_url
        self.namespace = props.namespace or "_"
        self.http = HttpClient(auth=props.credentials, verify=not props.insecure, attempts=attempts,
                               backoff=backoff, sleep=sleep, timeout=timeout)
        self.down_hint = down_hint  # a better sentence than "cannot reach" (the local controller's)
        self._resolved_ns: Optional[str] = None

    def url(self, *parts: str) -> str:
        path = "/".join(quote(p, safe="") for p in parts)
        return f"{self.base}/api/v1/namespaces/{quote(self.namespace, safe='')}/{path}"

    def _send(self, method: str, url: str, *, params: Optional[dict] = None, body: Any = None,
              retry=(429, 500, 502, 503, 504), timeout: Optional[float] = None):
        try:
            return self.http.request(method, url, params=params, json=body, retry_statuses=retry, timeout=timeout)
        except TargetError:
            hint = self.down_hint(self.base)
            if hint:
                raise TargetError(hint) from None
            raise

    def error(self, method: str, url: str, resp) -> TargetError:
        try:
            detail = resp.json().get("error") or resp.text
        except (ValueError, AttributeError):
            detail = resp.text[:200]
        if resp.status_code == 401:
            return TargetError(f"OpenWhisk at {self.base} rejected the credentials (401); check AUTH in "
                               f"{self.props.source or 'your flags'}.")
        if resp.status_code == 404:
            return NotFoundError(f"{safe_url(url)} does not exist (404).")
        return TargetError(f"OpenWhisk {method} {safe_url(url)} failed with HTTP {resp.status_code}: {detail}")

    def get(self, *parts: str) -> Optional[dict]:
        """The entity, or None when it does not exist."""
        url = self.url(*parts)
        resp = self._send("GET", url)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self.error("GET", url, resp)
        return resp.json()

    def list(self, collection: str, params: dict) -> list:
        """GET a collection with query parameters (e.g. activations?name=PKG/ACTION&since=MS)."""
        url = self.url(collection)
        resp = self._send("GET", url, params=params)
        if resp.status_code != 200:
            raise self.error("GET", url, resp)
        return resp.json()

    def put(self, parts: tuple, body: dict, overwrite: bool = True) -> Optional[dict]:
        """The stored entity; None when it exists already and overwrite is False (409)."""
        url = self.url(*parts)
        resp = self._send("PUT", url, params={"overwrite": str(overwrite).lower()}, body=body)
        if resp.status_code == 409 and not overwrite:
            return None
        if resp.status_code != 200:
            raise self.error("PUT", url, resp)
        return resp.json()

    def delete(self, *parts: str, params: Optional[dict] = None) -> None:
        url = self.url(*parts)
        resp = self._send("DELETE", url, params=params)
        if resp.status_code not in (200, 404):
            raise self.error("DELETE", url, resp)

    def invoke(self, parts: tuple, payload: Any, timeout: float):
        """POST ?blocking=true; the response (200, 202 still running, 502 application error)."""
        url = self.url(*parts)
        resp = self._send("POST", url, params={"blocking": "true"}, body=payload, retry=(429, 503), timeout=timeout)
        if resp.status_code == 404:
            raise NotFoundError(f"{safe_url(url)} does not exist (404).")
        if resp.status_code not in (200, 202, 502):
            raise self.error("POST", url, resp)
        return resp

    def feed(self, feed_action: str, lifecycle_event: str, trigger: str, params: dict, timeout: float = 60.0) -> None:
        """Invoke a feed action (`/whisk.system/messaging/messageHubFeed`) for `trigger` (its
        fully qualified name) as `wsk trigger create --feed` does: blocking, with
        lifecycleEvent CREATE/DELETE, triggerName and this client's authKey."""
        parts = [p for p in feed_action.split("/") if p]
        url = f"{self.base}/api/v1/namespaces/{quote(parts[0], safe='')}/actions/" + "/".join(
            quote(p, safe="") for p in parts[1:])
        body = {**params, "lifecycleEvent": lifecycle_event, "triggerName": trigger, "authKey": self.props.auth}
        resp = self._send("POST", url, params={"blocking": "true", "result": "true"}, body=body, retry=(429, 503),
                          timeout=timeout)
        if resp.status_code == 404:
            raise NotFoundError(f"The feed action {feed_action} does not exist on {self.base} (404).")
        if resp.status_code != 200:
            raise TargetError(f"The feed action {feed_action} refused {lifecycle_event} for {trigger}: "
                              f"{_error_text(resp)}")

    def resolved_namespace(self) -> str:
        """The real namespace name (for conductor action paths and web URLs)."""
        if self.namespace != "_":
            return self.namespace
        if self._resolved_ns is None:
            url = f"{self.base}/api/v1/namespaces"
            resp = self._send("GET", url)
            names = resp.json() if resp.status_code == 200 else []
            self._resolved_ns = names[0] if names else "_"
        return self._resolved_ns


class DryRunOpenWhiskClient:
    """OpenWhiskClient's methods; writes go to `recorder`, never to the platform."""

    def __init__(self, inner: Optional[OpenWhiskClient], recorder: Recorder, namespace: str = "_"):
        self.inner = inner
        self.recorder = recorder
        self.base = inner.base if inner else OFFLINE_BASE
        self.namespace = inner.namespace if inner else (namespace or "_")
        self._planned: dict = {}  # path -> entity as this dry run would leave it (None: deleted)
        self._warned = False

    def url(self, *parts: str) -> str:
        path = "/".join(quote(p, safe="") for p in parts)
        return f"{self.base}/api/v1/namespaces/{quote(self.namespace, safe='')}/{path}"

    def get(self, *parts: str) -> Optional[dict]:
        if parts not in self._planned:
            return self._read(*parts)
        entity = copy.deepcopy(self._planned[parts])
        if parts[0] == "packages" and entity is not None:  # the planned package keeps its actions
            try:
                stored = self._read(*parts)  # with the planned actions merged in
            except Unreadable:
                stored = None
            entity["actions"] = stored["actions"] if stored else self._planned_actions(parts[1], [])
        return entity

    def _read(self, *parts: str) -> Optional[dict]:
        if self.inner is None:
            raise Unreadable("No OpenWhisk API host is configured; the dry run plans offline.")
        try:
            entity = self.inner.get(*parts)
        except TargetError as e:
            if not self._warned:
                self._warned = True
                log.warning("%s; the dry run plans as if nothing were deployed there.", str(e).split(";")[0])
            raise Unreadable(str(e)) from None
        if parts[0] == "packages" and entity is not None:
            entity["actions"] = self._planned_actions(parts[1], entity.get("actions") or [])
        return entity

    def _planned_actions(self, package: str, actions: list) -> list:
        """A package's action list as this dry run would leave it."""
        by_name = {a.get("name"): a for a in actions}
        for path, body in self._planned.items():
            if path[:2] == ("actions", package) and len(path) == 3:
                if body is None:
                    by_name.pop(path[2], None)
                else:
                    by_name[path[2]] = {"name": path[2], "annotations": body.get("annotations") or []}
        return list(by_name.values())

    def list(self, collection: str, params: dict) -> list:
        if self.inner is None:
            raise Unreadable("No OpenWhisk API host is configured; the dry run plans offline.")
        return self.inner.list(collection, params)

    def put(self, parts: tuple, body: dict, overwrite: bool = True) -> Optional[dict]:
        self.recorder.add("PUT", safe_url(self.url(*parts)) + f"?overwrite={str(overwrite).lower()}",
                          redact(body, SECRET_KEYS))
        self._planned[parts] = copy.deepcopy(body)
        return body

    def delete(self, *parts: str, params: Optional[dict] = None) -> None:
        query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
        self.recorder.add("DELETE", safe_url(self.url(*parts)) + query, None)
        self._planned[parts] = None

    def invoke(self, parts: tuple, payload: Any, timeout: float):
        raise TargetError("A dry run invokes nothing; drop --dry-run to call the function.")

    def feed(self, feed_action: str, lifecycle_event: str, trigger: str, params: dict, timeout: float = 60.0) -> None:
        parts = [p for p in feed_action.split("/") if p]
        url = f"{self.base}/api/v1/namespaces/" + "/".join([parts[0], "actions", *parts[1:]])
        self.recorder.add("POST", safe_url(url) + "?blocking=true&result=true",
                          {**params, "lifecycleEvent": lifecycle_event, "triggerName": trigger, "authKey": "***"})

    def resolved_namespace(self) -> str:
        if self.inner is None:
            return self.namespace
        try:
            return self.inner.resolved_namespace()
        except TargetError:
            return self.namespace

    def error(self, method: str, url: str, resp) -> TargetError:
        return TargetError(f"OpenWhisk {method} {safe_url(url)} failed with HTTP {resp.status_code}")
