"""The local controller's behaviour, independent of HTTP: entities, invocation (docker
actions and conductor actions), activation records.

Semantics follow OpenWhisk (its REST API: tests/specs/openwhisk/apiv1swagger.json; the
rules: docs/architecture.md, "The local controller"): an activation's response status is
`success` (0), `application error` (1: the action returned `{"error": ...}`), `action
developer error` (2: /init or /run failed, timed out, or did not answer JSON) or `whisk
internal error` (3: e.g. the image cannot be pulled). A conductor action is driven step by
step as OpenWhisk's conductor actions documentation describes: secondary activations of the conductor alternate with
component activations, all `cause`d by one primary activation whose logs list them.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

from mlfn.targets.local.pool import ActionRuntime, InitError, PoolBusy, PullError, RunOutcome

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\Z")
LIMITS = {"memory": (128, 512, 256), "timeout": (100, 300000, 60000), "logs": (0, 10, 10),
          "concurrency": (1, 500, 1)}
MAX_PAYLOAD = 1024 * 1024
MAX_COMPONENTS = 50
STATUS = {0: "success", 1: "application error", 2: "action developer error", 3: "whisk internal error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


def truthy(v: Any) -> bool:
    return v not in (None, False, 0, "", "false")


def ann(entity: dict, key: str, default=None):
    for kv in entity.get("annotations") or []:
        if kv.get("key") == key:
            return kv.get("value")
    return default


def bump(version: str) -> str:
    parts = (version or "0.0.0").split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        return "0.0.1"
    return ".".join(parts)


class Controller:
    def __init__(self, store, pool, namespace: str = "guest", workers: int = 64):
        self.store = store
        self.pool = pool
        self.namespace = namespace
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlfn-activation")
        self.pending: dict = {}  # activation id -> Future (for 202 + later lookup)
        self.lock = threading.Lock()

    # ---- entities ------------------------------------------------------------------------------

    @staticmethod
    def check_name(name: str, what: str) -> None:
        if not NAME_RE.match(name or ""):
            raise ApiError(400, f"The {what} name '{name}' is not valid.")

    def put_package(self, name: str, body: dict, overwrite: bool) -> dict:
        self.check_name(name, "package")
        if not isinstance(body, dict):
            raise ApiError(400, "The request content was malformed: a JSON object is expected.")
        with self.store.lock:
            old = self.store.packages.get(name)
            if old and not overwrite:
                raise ApiError(409, "resource already exists")
            pkg = {
                "namespace": self.namespace, "name": name,
                "version": bump(old["version"]) if old else "0.0.1",
                "publish": bool(body.get("publish", old.get("publish") if old else False)),
                "annotations": body.get("annotations", old.get("annotations") if old else []) or [],
                "parameters": body.get("parameters", old.get("parameters") if old else []) or [],
                "binding": {},
                "updated": now_ms(),
            }
            self.store.put_package(name, pkg)
            return pkg

    def get_package(self, name: str) -> dict:
        pkg = self.store.packages.get(name)
        if pkg is None:
            raise ApiError(404, "The requested resource does not exist.")
        actions = [{"name": a["name"], "version": a["version"], "annotations": a.get("annotations", []),
                    "parameters": a.get("parameters", [])} for a in self.store.package_actions(name)]
        return {**pkg, "actions": sorted(actions, key=lambda a: a["name"]), "feeds": []}

    def delete_package(self, name: str, force: bool) -> dict:
        with self.store.lock:
            pkg = self.store.packages.get(name)
            if pkg is None:
                raise ApiError(404, "The requested resource does not exist.")
            inside = self.store.package_actions(name)
            if inside and not force:
                raise ApiError(409, f"Package not empty (contains {len(inside)} entities). Set force param or "
                                    "delete package contents.")
            self.store.delete_package(name)
        for a in inside:
            self.pool.evict(self._key(a))
        return pkg

    def _key(self, action: dict) -> str:
        ns = action["namespace"]
        pkg = ns.split("/", 1)[1] + "/" if "/" in ns else ""
        return pkg + action["name"]

    def put_action(self, key: str, body: dict, overwrite: bool) -> dict:
        pkg, _, name = key.rpartition("/")
        self.check_name(name, "action")
        if not isinstance(body, dict):
            raise ApiError(400, "The request content was malformed: a JSON object is expected.")
        if pkg and pkg not in self.store.packages:
            raise ApiError(404, f"The package '{pkg}' does not exist.")
        with self.store.lock:
            old = self.store.actions.get(key)
            if old and not overwrite:
                raise ApiError(409, "resource already exists")
            exec_ = body.get("exec") or (old or {}).get("exec")
            if not exec_:
                raise ApiError(400, "exec undefined")
            kind = exec_.get("kind")
            if kind != "blackbox" or not exec_.get("image"):
                raise ApiError(400, f"The local controller runs docker (blackbox) actions with an image; kind "
                                    f"'{kind}' is not available here.")
            limits = dict((old or {}).get("limits") or {k: v[2] for k, v in LIMITS.items()})
            for k, v in (body.get("limits") or {}).items():
                if k not in LIMITS:
                    continue
                lo, hi, _ = LIMITS[k]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise ApiError(400, f"{k} limit {v!r} exceeds allowed threshold of [{lo}, {hi}].")
                limits[k] = v
            action = {
                "namespace": f"{self.namespace}/{pkg}" if pkg else self.namespace,
                "name": name,
                "version": bump(old["version"]) if old else "0.0.1",
                "publish": bool(body.get("publish", (old or {}).get("publish", False))),
                "exec": {k: v for k, v in exec_.items() if k in ("kind", "image", "code", "main", "binary")},
                "annotations": body.get("annotations", (old or {}).get("annotations", [])) or [],
                "parameters": body.get("parameters", (old or {}).get("parameters", [])) or [],
                "limits": limits,
                "updated": now_ms(),
            }
            action["exec"].setdefault("binary", False)
            self.store.put_action(key, action)
        if old:
            self.pool.evict(key)
        return action

    def get_action(self, key: str) -> dict:
        a = self.store.actions.get(key)
        if a is None:
            raise ApiError(404, "The requested resource does not exist.")
        return a

    def delete_action(self, key: str) -> dict:
        a = self.store.delete_action(key)
        if a is None:
            raise ApiError(404, "The requested resource does not exist.")
        self.pool.evict(key)
        return a

    def list_actions(self, limit: int, skip: int) -> list:
        items = sorted(self.store.actions.values(), key=lambda a: -a.get("updated", 0))
        out = []
        for a in items[skip: skip + (limit or 30)]:
            out.append({k: a[k] for k in ("namespace", "name", "version", "publish", "annotations", "limits",
                                           "updated")} | {"exec": {"kind": a["exec"]["kind"],
                                                                   "binary": a["exec"].get("binary", False)}})
        return out

    def resolve(self, fqn: str) -> Optional[tuple]:
        """'/ns/pkg/name', '/ns/name', 'pkg/name' or 'name' -> (key, action) or None."""
        parts = [p for p in (fqn or "").split("/") if p]
        if fqn.startswith("/"):
            if not parts or parts[0] not in (self.namespace, "_"):
                return None
            parts = parts[1:]
        if not 1 <= len(parts) <= 2:
            return None
        key = "/".join(parts)
        a = self.store.actions.get(key)
        return (key, a) if a else None

    # ---- invocation ----------------------------------------------------------------------------

    def start(self, key: str, action: dict, args: Any, cause: Optional[str] = None) -> tuple:
        """Begin an activation in the background: (activation id, Future of its record)."""
        aid = uuid.uuid4().hex
        fut: Future = self.executor.submit(self.activate, key, action, args, aid, cause)
        with self.lock:
            self.pending[aid] = fut
        fut.add_done_callback(lambda _f: self._forget(aid))
        return aid, fut

    def _forget(self, aid: str) -> None:
        with self.lock:
            self.pending.pop(aid, None)

    def activate(self, key: str, action: dict, args: Any, aid: Optional[str] = None,
                 cause: Optional[str] = None) -> dict:
        aid = aid or uuid.uuid4().hex
        try:
            if truthy(ann(action, "conductor")):
                rec = self._run_conductor(key, action, args, aid, cause)
            else:
                rec = self._run_action(key, action, args, aid, cause)
        except Exception as e:  # noqa: BLE001 - any bug is an internal error, never a hung request
            log.exception("activation %s failed", aid)
            rec = self._record(key, action, aid, now_ms(), now_ms(), 3, {"error": f"internal error: {e}"}, [],
                               cause, {})
        return rec

    def _merge_args(self, key: str, action: dict, args: Any) -> tuple:
        """(run value, init env): package and action parameters merged under the payload."""
        pkg = key.rpartition("/")[0]
        params, env = {}, {}
        for source in ((self.store.packages.get(pkg) or {}).get("parameters") or [], action.get("parameters") or []):
            for kv in source:
                if kv.get("init"):
                    env[kv["key"]] = kv["value"] if isinstance(kv["value"], str) else json.dumps(kv["value"])
                else:
                    params[kv["key"]] = kv["value"]
        if isinstance(args, dict):
            final = truthy(ann(action, "final"))
            value = {**params, **{k: v for k, v in args.items() if not (final and k in params)}}
        else:
            value = args if args is not None else params
        return value, env

    def _run_action(self, key: str, action: dict, args: Any, aid: str, cause: Optional[str]) -> dict:
        start = now_ms()
        value, env = self._merge_args(key, action, args)
        limits = action["limits"]
        fqn = f"/{action['namespace']}/{action['name']}"
        env = {**env, "__OW_NAMESPACE": self.namespace, "__OW_ACTION_NAME": fqn,
               "__OW_ACTION_VERSION": action["version"], "__OW_API_HOST": self.pool.apihost}
        init_body = {"value": {"name": action["name"], "main": action["exec"].get("main") or "main",
                               "binary": bool(action["exec"].get("binary")), "env": env}}
        if action["exec"].get("code"):
            init_body["value"]["code"] = action["exec"]["code"]
        runtime = ActionRuntime(key=f"{key}@{action['version']}", image=action["exec"]["image"],
                                memory_mb=limits["memory"], concurrency=limits["concurrency"], init_body=init_body,
                                timeout_s=limits["timeout"] / 1000,
                                log_limit_bytes=limits.get("logs", 10) * 1024 * 1024)
        body = {"value": value, "namespace": self.namespace, "action_name": fqn,
                "action_version": action["version"], "activation_id": aid, "transaction_id": aid}
        if truthy(ann(action, "provide-api-key", False)):
            body["api_key"] = "<local>"
        try:
            out = self.pool.run(runtime, body)
        except (PullError, PoolBusy) as e:
            return self._record(key, action, aid, start, now_ms(), 3, {"error": str(e)}, [], cause, {})
        except InitError as e:
            return self._record(key, action, aid, start, now_ms(), 2, {"error": str(e)}, [], cause, {})
        code, result = self._result_of(out, limits["timeout"])
        extra = {"waitTime": out.wait_ms} | ({"initTime": out.init_ms} if out.init_ms is not None else {})
        return self._record(key, action, aid, start if out.init_ms is not None else out.answer.start_ms,
                            out.answer.end_ms, code, result, out.logs, cause, extra)

    @staticmethod
    def _result_of(out: RunOutcome, timeout_ms: int) -> tuple:
        """(status code, result) of a run, as OpenWhisk's invoker judges the /run answer."""
        if out.died:
            return 2, {"error": "The action did not produce a valid response and exited unexpectedly."}
        answer = out.answer
        if answer.status is None:
            return 2, {"error": f"The action exceeded its time limits of {timeout_ms} milliseconds."}
        try:
            result = json.loads(answer.content)
        except ValueError:
            result = None
        if answer.status == 200 and isinstance(result, dict):
            if len(answer.content) > MAX_PAYLOAD:
                return 1, {"error": f"The action produced a response that exceeded the allowed length: "
                                    f"{len(answer.content)} > {MAX_PAYLOAD} bytes."}
            return (1 if "error" in result else 0), result
        if isinstance(result, dict) and "error" in result:
            return 2, result
        text = answer.content[:200].decode(errors="replace")
        return 2, {"error": f"The action did not produce a valid JSON response: HTTP {answer.status} {text}"}


    def _record(self, key: str, action: dict, aid: str, start: int, end: int, code: int, result: Any,
                logs: list, cause: Optional[str], extra: dict, kind: Optional[str] = None,
                more_ann: Optional[list] = None) -> dict:
        path = f"{action['namespace']}/{action['name']}"
        anns = [{"key": "path", "value": path}, {"key": "kind", "value": kind or action["exec"]["kind"]},
                {"key": "limits", "value": action["limits"]}]
        anns += [{"key": k, "value": v} for k, v in extra.items()]
        if cause:
            anns.append({"key": "causedBy", "value": "sequence"})
        anns += more_ann or []
        rec = {
            "namespace": self.namespace, "name": action["name"], "version": action["version"], "publish": False,
            "subject": self.namespace, "activationId": aid, "start": start, "end": end,
            "duration": max(0, end - start),
            "response": {"status": STATUS[code], "statusCode": code, "success": code == 0, "result": result,
                         "size": len(json.dumps(result))},
            "logs": logs, "annotations": anns,
        }
        if cause:
            rec["cause"] = cause
        self.store.add_activation(rec)
        return rec

    def _run_conductor(self, key: str, action: dict, args: Any, aid: str, cause: Optional[str]) -> dict:
        start = now_ms()
        params = args if isinstance(args, dict) else {"value": args}
        state: dict = {}
        logs, duration, components = [], 0, 0
        final: Optional[tuple] = None
        for _ in range(2 * MAX_COMPONENTS + 1):
            sec = self._run_action(key, action, {**params, **state}, uuid.uuid4().hex, aid)
            logs.append(sec["activationId"])
            duration += sec["duration"]
            resp = sec["response"]
            if not resp["success"]:
                final = (resp["statusCode"], resp["result"])
                break
            out = resp["result"]
            state = out.get("state") if isinstance(out.get("state"), dict) else {}
            if "action" not in out:
                p = out.get("params", out)
                final = (0, p if isinstance(p, dict) else {"value": p})
                break
            p = out.get("params", {})
            p = p if isinstance(p, dict) else {"value": p}
            target = self.resolve(str(out["action"]))
            if target is None:
                params = {"error": f"Failed to resolve action with name '{out['action']}' during composition."}
                continue
            if components >= MAX_COMPONENTS:
                params = {"error": f"Exceeded the maximum number of components ({MAX_COMPONENTS})."}
                continue
            components += 1
            comp = self.activate(target[0], target[1], p, uuid.uuid4().hex, aid)
            logs.append(comp["activationId"])
            duration += comp.get("duration", 0)
            r = comp["response"]["result"]
            params = r if isinstance(r, dict) else {"value": r}
        if final is None:
            final = (1, {"error": "Exceeded the maximum number of conductor steps."})
        end = max(now_ms(), start + duration)
        rec = self._record(key, action, aid, start, end, final[0], final[1], logs, cause, {}, kind="sequence",
                           more_ann=[{"key": "topmost", "value": cause is None}, {"key": "conductor", "value": True}])
        rec["duration"] = duration
        return rec

    # ---- activations ---------------------------------------------------------------------------

    def get_activation(self, aid: str) -> dict:
        rec = self.store.activations.get(aid)
        if rec is None:
            raise ApiError(404, "The requested resource does not exist.")
        return rec

    def list_activations(self, name: Optional[str], limit: int, skip: int, since: Optional[int],
                         upto: Optional[int], docs: bool) -> list:
        out = []
        for rec in self.store.list_activations():
            if name:
                path = ann(rec, "path", "")
                if name not in (rec["name"], path.split("/", 1)[-1], path):
                    continue
            if since and rec["start"] < since:
                continue
            if upto and rec["start"] > upto:
                continue
            out.append(rec)
        out = out[skip: skip + (limit or 30)]
        if docs:
            return out
        brief = ("namespace", "name", "version", "publish", "annotations", "activationId", "start", "end",
                 "duration", "cause")
        return [{k: r[k] for k in brief if k in r} | {"statusCode": min(2, r["response"]["statusCode"])}
                for r in out]
