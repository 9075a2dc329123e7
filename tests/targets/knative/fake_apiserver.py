"""A small, real HTTP Kubernetes API server for Knative Services, plus a controller.

No Kubernetes API server or Knative controller can run here, so mlfn's knative target is
tested against this one, which follows Kubernetes semantics for the calls mlfn makes:

- `services.serving.knative.dev`: GET, POST (409 AlreadyExists), PATCH with
  `application/merge-patch+json` (RFC 7386; `metadata.resourceVersion` in the body is a
  precondition -> 409 Conflict), PUT (resourceVersion required), DELETE (its revisions
  are garbage-collected with it); `metadata.generation` is bumped on spec changes only;
  every write, including status writes by the controller, bumps `resourceVersion`.
- `revisions.serving.knative.dev`: LIST with `labelSelector=k=v[,k=v]`, GET, DELETE.
- `triggers.eventing.knative.dev`: GET, LIST with a labelSelector, POST, PUT, DELETE; the
  controller resolves `spec.subscriber` into `status.subscriberUri` (Ready) like Eventing's.
- Bearer-token authentication (401 otherwise); errors are `kind: Status` objects.
- Two admission rules of Knative's webhook that a client can trip over on update: a BYO
  revision name must start with `<service>-`, and a changed template needs a new name.

The controller (a thread) reconciles like Knative Serving: it creates the revision named
by `spec.template.metadata.name` from the template, makes it Ready (after
`revision_delay`) or fails it (`fail_revisions[name] = (reason, message)`), then sets the
route: `status.traffic` with tag URLs, `status.url`, and the conditions
ConfigurationsReady / RoutesReady / Ready, `observedGeneration`,
`latestCreatedRevisionName` and `latestReadyRevisionName`.

Fault injection: `concurrent_writes = n` makes the next n PATCH/PUTs race a concurrent
writer (another field manager changes the object first, so the client's precondition
fails with a genuine 409); `fail_next = [503, 429, ...]` answers the next requests with
those codes (an overloaded or failing-over API server).
"""
from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# RFC 7386 merge patch: mlfn's own, checked against the RFC's examples in test_merge_patch.py
from mlfn.targets.knative.client import apply_merge_patch

GROUP_PATH = re.compile(
    r"^/apis/(?:serving\.knative\.dev/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>services|revisions)"
    r"|eventing\.knative\.dev/v1/namespaces/(?P<ens>[^/]+)/(?P<eplural>triggers))(?:/(?P<name>[^/]+))?$"
)
GROUPS = {"services": "serving.knative.dev", "revisions": "serving.knative.dev", "triggers": "eventing.knative.dev"}
DOMAIN = "example.com"
SECRET_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/secrets(?:/(?P<name>[^/]+))?$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class FakeKube:
    """The object store, the API semantics and the Knative controller simulation."""

    def __init__(self, token: str = "test-token", revision_delay: float = 0.1, tick: float = 0.02):
        self.token = token
        self.revision_delay = revision_delay
        self.tick = tick
        self.lock = threading.RLock()
        self.secrets: dict = {}  # (namespace, name) -> Secret
        self.objects: dict = {}  # (plural, ns, name) -> object
        self.rv = 100
        self.fail_revisions: dict = {}  # revision name -> (reason, message)
        self.concurrent_writes = 0
        self.fail_next: list = []  # HTTP codes answered to the next requests (e.g. [503, 429])
        self.conflicts_returned = 0
        self.requests: list = []  # (method, path, content-type)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- store helpers

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def get(self, plural: str, ns: str, name: str) -> dict:
        obj = self.objects.get((plural, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{plural}.{GROUPS[plural]} "{name}" not found')
        return obj

    def service(self, name: str, ns: str = "mlfn-test") -> dict:
        with self.lock:
            return copy.deepcopy(self.objects[("services", ns, name)])

    def revision(self, name: str, ns: str = "mlfn-test") -> dict:
        with self.lock:
            return copy.deepcopy(self.objects[("revisions", ns, name)])

    def revision_names(self, ns: str = "mlfn-test") -> list:
        with self.lock:
            return sorted(k[2] for k in self.objects if k[0] == "revisions" and k[1] == ns)

    # ---------------------------------------------------------------- API verbs

    def create(self, plural: str, ns: str, body: dict) -> dict:
        if plural == "revisions":
            raise ApiError(405, "MethodNotAllowed", "revisions are created by the controller")
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if (plural, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{plural}.{GROUPS[plural]} "{name}" already exists')
        if plural == "services":
            self._admit(body, None)
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        meta = obj["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
        self._bump(obj)
        self.objects[(plural, ns, name)] = obj
        return obj

    def _race(self, obj: dict) -> None:
        if self.concurrent_writes > 0:
            self.concurrent_writes -= 1
            obj["metadata"].setdefault("labels", {})["other-writer"] = str(self.rv)
            self._bump(obj)

    def patch(self, plural: str, ns: str, name: str, body: dict, content_type: str) -> dict:
        if not content_type.startswith("application/merge-patch+json"):
            raise ApiError(415, "UnsupportedMediaType", f"the fake API server only speaks merge-patch, not {content_type}")
        obj = self.get(plural, ns, name)
        self._race(obj)
        want = ((body.get("metadata") or {}).get("resourceVersion"))
        if want is not None and want != obj["metadata"]["resourceVersion"]:
            self.conflicts_returned += 1
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural}.serving.knative.dev "{name}": '
                           "the object has been modified; please apply your changes to the latest version and try again")
        patch = copy.deepcopy(body)
        patch.get("metadata", {}).pop("resourceVersion", None)
        patch.pop("status", None)
        for k in ("name", "namespace", "uid", "generation", "creationTimestamp"):
            patch.get("metadata", {}).pop(k, None)
        return self._write(plural, obj, apply_merge_patch(obj, patch))

    def replace(self, plural: str, ns: str, name: str, body: dict) -> dict:
        obj = self.get(plural, ns, name)
        self._race(obj)
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want != obj["metadata"]["resourceVersion"]:
            self.conflicts_returned += 1
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has been modified')
        new = copy.deepcopy(body)
        new["status"] = obj.get("status")
        for k in ("name", "namespace", "uid", "generation", "creationTimestamp"):
            new["metadata"][k] = obj["metadata"].get(k)
        return self._write(plural, obj, new)

    def _write(self, plural: str, old: dict, new: dict) -> dict:
        if plural == "services":
            self._admit(new, old)
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._bump(new)
        self.objects[(plural, new["metadata"]["namespace"], new["metadata"]["name"])] = new
        return new

    def _admit(self, new: dict, old) -> None:
        name = new["metadata"]["name"]
        tpl = (new.get("spec") or {}).get("template") or {}
        rev = (tpl.get("metadata") or {}).get("name")
        if rev and not rev.startswith(name + "-"):
            raise ApiError(400, "BadRequest", f"admission webhook denied the request: spec.template.metadata.name "
                           f"must have prefix {name}-")
        if old is not None:
            old_tpl = (old.get("spec") or {}).get("template") or {}
            if rev and (old_tpl.get("metadata") or {}).get("name") == rev and old_tpl != tpl:
                raise ApiError(400, "BadRequest", "admission webhook denied the request: Saw the following changes "
                               f"without a name change (-old +new): spec.template (name {rev})")
        total = sum(int(t.get("percent") or 0) for t in (new.get("spec") or {}).get("traffic") or [])
        if (new.get("spec") or {}).get("traffic") and total != 100:
            raise ApiError(400, "BadRequest", f"admission webhook denied the request: Traffic targets sum to {total}, want 100: spec.traffic")

    def delete(self, plural: str, ns: str, name: str) -> dict:
        obj = self.get(plural, ns, name)
        del self.objects[(plural, ns, name)]
        if plural == "services":
            for key in [k for k, v in self.objects.items() if k[0] == "revisions" and k[1] == ns
                        and v["metadata"]["labels"].get("serving.knative.dev/service") == name]:
                del self.objects[key]
        return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name, "kind": plural}}

    def list(self, plural: str, ns: str, selector: str) -> dict:
        want = dict(p.split("=", 1) for p in selector.split(",") if "=" in p) if selector else {}
        items = [copy.deepcopy(v) for k, v in sorted(self.objects.items())
                 if k[0] == plural and k[1] == ns
                 and all((v["metadata"].get("labels") or {}).get(a) == b for a, b in want.items())]
        kind = {"revisions": "RevisionList", "services": "ServiceList", "triggers": "TriggerList"}[plural]
        return {"apiVersion": f"{GROUPS[plural]}/v1", "kind": kind, "items": items,
                "metadata": {"resourceVersion": str(self.rv)}}

    # ---------------------------------------------------------------- the controller

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with self.lock:
                for key in [k for k in self.objects if k[0] == "services"]:
                    if key in self.objects:
                        self._reconcile(self.objects[key])
                for key in [k for k in self.objects if k[0] == "triggers"]:
                    self._reconcile_trigger(self.objects[key])

    def _reconcile_trigger(self, trigger: dict) -> None:
        """Like Eventing's trigger controller: resolve the subscriber (a Service's address or
        a URI) into status.subscriberUri and say Ready (SubscriberResolved False otherwise)."""
        ns = trigger["metadata"]["namespace"]
        sub = (trigger.get("spec") or {}).get("subscriber") or {}
        ref, uri = sub.get("ref") or {}, sub.get("uri")
        if ref:
            svc = self.objects.get(("services", ref.get("namespace") or ns, ref.get("name")))
            uri = (((svc or {}).get("status") or {}).get("address") or {}).get("url")
        cond = {"type": "Ready", "status": "True"} if uri else {
            "type": "Ready", "status": "False", "reason": "SubscriberResolvedFailed",
            "message": f"the subscriber {ref.get('kind')} {ref.get('name')} does not exist or has no address"}
        status = {"observedGeneration": trigger["metadata"]["generation"], "conditions": [cond]}
        if uri:
            status["subscriberUri"] = uri
        if status != trigger.get("status"):
            trigger["status"] = status
            self._bump(trigger)

    def _revision_state(self, rev: dict):
        """(status, reason, message) of a revision, moving it to Ready after revision_delay."""
        cond = next(c for c in rev["status"]["conditions"] if c["type"] == "Ready")
        if cond["status"] == "Unknown" and time.monotonic() >= rev["_ready_at"]:
            name = rev["metadata"]["name"]
            if name in self.fail_revisions:
                reason, message = self.fail_revisions[name]
                cond.update(status="False", reason=reason, message=message)
            else:
                cond.update(status="True", reason="", message="")
                cond.pop("reason"), cond.pop("message")
            self._bump(rev)
        return cond["status"], cond.get("reason", ""), cond.get("message", "")

    def _reconcile(self, svc: dict) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        tpl = svc["spec"]["template"]
        rev_name = (tpl.get("metadata") or {}).get("name") or f"{name}-00001"
        key = ("revisions", ns, rev_name)
        if key not in self.objects:
            meta = tpl.get("metadata") or {}
            rev = {
                "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                "metadata": {
                    "name": rev_name, "namespace": ns, "uid": str(uuid.uuid4()), "generation": 1,
                    "creationTimestamp": _now(),
                    "labels": {**(meta.get("labels") or {}), "serving.knative.dev/service": name,
                               "serving.knative.dev/configuration": name,
                               "serving.knative.dev/configurationGeneration": str(svc["metadata"]["generation"])},
                    "annotations": dict(meta.get("annotations") or {}),
                },
                "spec": copy.deepcopy(tpl.get("spec") or {}),
                "status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "Deploying", "message": ""}]},
                "_ready_at": time.monotonic() + self.revision_delay,
            }
            self._bump(rev)
            self.objects[key] = rev
        status = copy.deepcopy(svc.get("status") or {})
        status["observedGeneration"] = svc["metadata"]["generation"]
        status["latestCreatedRevisionName"] = rev_name
        state, reason, message = self._revision_state(self.objects[key])
        conds = {}
        if state == "True":
            status["latestReadyRevisionName"] = rev_name
            conds["ConfigurationsReady"] = ("True", "", "")
        elif state == "False":
            conds["ConfigurationsReady"] = ("False", "RevisionFailed",
                                            f'Revision "{rev_name}" failed with message: {message}.')
        else:
            conds["ConfigurationsReady"] = ("Unknown", "RevisionDeploying", f'Revision "{rev_name}" is deploying.')
        route = ("True", "", "")
        for t in svc["spec"].get("traffic") or [{"latestRevision": True, "percent": 100}]:
            target = t.get("revisionName") or status.get("latestReadyRevisionName")
            robj = self.objects.get(("revisions", ns, target)) if target else None
            if robj is None:
                route = ("False", "RevisionMissing", f'Configuration "{name}" does not have any ready Revision.'
                         if not target else f'Revision "{target}" referenced in traffic not found.')
                break
            rstate, _, _ = self._revision_state(robj)
            if rstate == "False":
                route = ("False", "RevisionFailed", f'Revision "{target}" failed.')
                break
            if rstate == "Unknown":
                route = ("Unknown", "RevisionDeploying", f'Revision "{target}" is not ready yet.')
        conds["RoutesReady"] = route
        if route[0] == "True":
            host = f"{name}.{ns}.{DOMAIN}"
            status["url"] = f"http://{host}"
            status["address"] = {"url": f"http://{name}.{ns}.svc.cluster.local"}
            status["traffic"] = []
            for t in svc["spec"].get("traffic") or []:
                entry = {"revisionName": t.get("revisionName"), "percent": int(t.get("percent") or 0),
                         "latestRevision": bool(t.get("latestRevision", False))}
                if t.get("tag"):
                    entry["tag"] = t["tag"]
                    entry["url"] = f"http://{t['tag']}-{host}"
                status["traffic"].append(entry)
        worst = next((c for c in ("False", "Unknown") if any(v[0] == c for v in conds.values())), "True")
        pick = next((v for v in conds.values() if v[0] == worst), ("True", "", ""))
        conds["Ready"] = (worst, pick[1], pick[2])
        old = {c["type"]: c for c in status.get("conditions") or []}
        status["conditions"] = []
        for ctype, (st, rs, msg) in conds.items():
            c = {"type": ctype, "status": st}
            if rs:
                c["reason"] = rs
            if msg:
                c["message"] = msg
            prev = old.get(ctype) or {}
            c["lastTransitionTime"] = prev.get("lastTransitionTime") if prev.get("status") == st else _now()
            status["conditions"].append(c)
        if status != svc.get("status"):
            svc["status"] = status
            self._bump(svc)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    kube: FakeKube = None  # set per server

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: ApiError) -> None:
        self._send(e.code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": e.message, "reason": e.reason, "code": e.code})

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "BadRequest", "request body is not JSON") from None

    def _handle(self, method: str) -> None:
        kube = self.kube
        url = urlsplit(self.path)
        kube.requests.append((method, url.path, self.headers.get("Content-Type", "")))
        code = 200
        try:
            if kube.fail_next:
                failure = kube.fail_next.pop(0)
                raise ApiError(failure, "ServiceUnavailable" if failure != 429 else "TooManyRequests",
                               f"injected failure {failure}")
            if self.headers.get("Authorization") != f"Bearer {kube.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            secret = SECRET_PATH.match(url.path)
            if secret:  # core v1 Secrets: get, create, replace (the API key set)
                return self._send(*self._secret(method, secret["ns"], secret["name"]))
            m = GROUP_PATH.match(url.path)
            if not m:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            ns, plural, name = m["ns"] or m["ens"], m["plural"] or m["eplural"], m["name"]
            query = parse_qs(url.query)
            body = self._body() if method in ("POST", "PATCH", "PUT") else None
            with kube.lock:
                if method == "GET" and name:
                    result = kube.get(plural, ns, name)
                elif method == "GET":
                    result = kube.list(plural, ns, (query.get("labelSelector") or [""])[0])
                elif method == "POST" and not name:
                    result = kube.create(plural, ns, body)
                    code = 201
                elif method == "PATCH" and name:
                    result = kube.patch(plural, ns, name, body, self.headers.get("Content-Type", ""))
                elif method == "PUT" and name:
                    result = kube.replace(plural, ns, name, body)
                elif method == "DELETE" and name:
                    result = kube.delete(plural, ns, name)
                else:
                    raise ApiError(405, "MethodNotAllowed", f"{method} {url.path} is not supported")
                result = json.loads(json.dumps(_public(result) if "items" not in result
                                               else {**result, "items": [_public(i) for i in result["items"]]}))
            self._send(code, result)
        except ApiError as e:
            self._error(e)

    def _secret(self, method: str, ns: str, name) -> tuple:
        body = self._body() if method in ("POST", "PUT") else None
        secrets = self.kube.secrets
        with self.kube.lock:
            if method == "POST" and not name:
                key = (ns, body["metadata"]["name"])
                if key in secrets:
                    raise ApiError(409, "AlreadyExists", f'secrets "{key[1]}" already exists')
                secrets[key] = body
                return 201, body
            if (ns, name) not in secrets:
                raise ApiError(404, "NotFound", f'secrets "{name}" not found')
            if method == "PUT":
                secrets[(ns, name)] = body
            elif method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} on secrets is not supported")
            return 200, secrets[(ns, name)]

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


class FakeApiServer:
    """`with FakeApiServer() as api:` -> api.url, api.kube (FakeKube), api.write_kubeconfig(path)."""

    def __init__(self, **kube_kwargs):
        self.kube = FakeKube(**kube_kwargs)
        handler = type("Handler", (_Handler,), {"kube": self.kube})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def write_kubeconfig(self, path, namespace: str = "mlfn-test", token: str = None) -> str:
        import yaml

        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": token or self.kube.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}},
                         {"name": "other", "context": {"cluster": "fake", "user": "tester", "namespace": "other-ns"}}],
        }
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        return str(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.kube.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
