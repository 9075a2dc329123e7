"""The local controller's REST API: the subset of OpenWhisk's `/api/v1` (apiv1swagger.json)
that mlfn and the standard clients (`wsk`, plain HTTP) use, on the standard library's
threading HTTP server.

    GET  /api/v1/namespaces
    GET  /api/v1/namespaces/{ns}/packages[/{pkg}]          PUT/DELETE packages
    GET  /api/v1/namespaces/{ns}/actions[/{pkg}]/{name}    PUT/DELETE; POST = invoke
         (?blocking=true&result=true&timeout=ms; 202 + activationId when it takes longer)
    GET  /api/v1/namespaces/{ns}/activations[/{id}[/logs|/result]]
    GET  /api/v1/namespaces/{ns}/{triggers,rules}[/{name}]  PUT/DELETE; POST = fire a trigger,
         or set a rule's status (mlfn.targets.local.triggers)
    ANY  /api/v1/web/{ns}/{pkg}/{name}[.json|.http|.text]  web actions (no auth unless
         require-whisk-auth)

Basic auth with the controller's key (OpenWhisk's guest key, or the private one of
`mlfn local up --auth generate`) on everything but web actions (401 otherwise). Errors are
`{"error": ..., "code": ...}`. Run it with `python -m mlfn.targets.local.api`.
"""
from __future__ import annotations

import argparse
import base64
import hmac
import json
import logging
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from mlfn.targets.local.home import local_key, owner_id, state_dir
from mlfn.targets.local.controller import MAX_PAYLOAD, ApiError, Controller, ann, truthy
from mlfn.targets.local.triggers import Triggers
from mlfn.targets.openwhisk.wskprops import GUEST_AUTH, GUEST_NAMESPACE

log = logging.getLogger("mlfn.targets.local.api")

BLOCKING_WAIT_S = 60.0
WEB_EXTENSIONS = (".json", ".http", ".html", ".svg", ".text")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "mlfn-local"
    controller: Controller  # set by make_server
    triggers: Triggers  # set by make_server
    auth: str = GUEST_AUTH  # the key accepted ("uuid:key"); set by make_server from the state folder

    def log_message(self, fmt, *args):  # request lines at DEBUG; life cycle at INFO
        log.debug("%s %s", self.address_string(), fmt % args)

    # ---- plumbing ------------------------------------------------------------------------------

    def _send(self, status: int, body, headers: Optional[dict] = None, raw: Optional[bytes] = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, headers: Optional[dict] = None) -> None:
        self._send(status, {"error": message, "code": uuid.uuid4().hex[:16]}, headers)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_PAYLOAD + 64 * 1024:
            self.rfile.read(n)
            raise ApiError(413, f"The request content was {n} bytes; the limit is {MAX_PAYLOAD} bytes.")
        return self.rfile.read(n) if n else b""

    def _json_body(self):
        raw = self._body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "The request content was malformed: not valid JSON.") from None

    def _authorized(self) -> bool:
        h = self.headers.get("Authorization") or ""
        if not h.startswith("Basic "):
            return False
        try:
            return hmac.compare_digest(base64.b64decode(h[6:]), self.auth.encode())
        except (ValueError, UnicodeDecodeError):
            return False

    def do_GET(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_OPTIONS(self):
        self._dispatch()

    def _dispatch(self):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if parts[:3] == ["api", "v1", "web"]:
                return self._web(parts[3:], url.query)
            if parts[:2] != ["api", "v1"]:
                raise ApiError(404, "The requested resource does not exist.")
            if len(parts) == 2:
                return self._send(200, {"api_paths": ["/api/v1"], "description": "mlfn local OpenWhisk-compatible API",
                                        "runtimes": {"blackbox": [{"kind": "blackbox"}]}})
            if not self._authorized():
                self._body()
                return self._error(401, "The supplied authentication is invalid")
            self._api(parts[2:], query)
        except ApiError as e:
            self._error(e.status, e.message)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001
            log.exception("request failed")
            self._error(500, f"internal error: {e}")

    # ---- /api/v1/namespaces/... ----------------------------------------------------------------

    def _api(self, parts: list, q: dict) -> None:
        c = self.controller
        m = self.command
        if parts == ["namespaces"] and m == "GET":
            return self._send(200, [c.namespace])
        if len(parts) < 3 or parts[0] != "namespaces":
            raise ApiError(404, "The requested resource does not exist.")
        ns, collection, rest = parts[1], parts[2], parts[3:]
        if ns not in ("_", c.namespace):
            raise ApiError(403, f"The supplied authentication is not authorized to access '{ns}'.")
        overwrite = q.get("overwrite", "false").lower() == "true"
        if collection == "packages":
            if not rest and m == "GET":
                return self._send(200, [c.get_package(n) for n in sorted(c.store.packages)][: int(q.get("limit") or 30)])
            if len(rest) != 1:
                raise ApiError(404, "The requested resource does not exist.")
            if m == "GET":
                return self._send(200, c.get_package(rest[0]))
            if m == "PUT":
                return self._send(200, c.put_package(rest[0], self._json_body(), overwrite))
            if m == "DELETE":
                return self._send(200, c.delete_package(rest[0], q.get("force", "").lower() == "true"))
        if collection == "actions":
            if not rest and m == "GET":
                return self._send(200, c.list_actions(int(q.get("limit") or 30), int(q.get("skip") or 0)))
            if rest and rest[-1] == "":
                rest = rest[:-1]
            if len(rest) not in (1, 2):
                raise ApiError(404, "The requested resource does not exist.")
            key = "/".join(rest)
            if len(rest) == 1 and m == "GET" and rest[0] in c.store.packages:  # GET actions/PKG/ lists the package
                return self._send(200, c.get_package(rest[0])["actions"])
            if m == "GET":
                return self._send(200, c.get_action(key))
            if m == "PUT":
                return self._send(200, c.put_action(key, self._json_body(), overwrite))
            if m == "DELETE":
                return self._send(200, c.delete_action(key))
            if m == "POST":
                return self._invoke(key, q)
        if collection == "activations":
            if not rest and m == "GET":
                return self._send(200, c.list_activations(q.get("name"), int(q.get("limit") or 30),
                                                          int(q.get("skip") or 0), _int(q.get("since")),
                                                          _int(q.get("upto")), q.get("docs", "").lower() == "true"))
            if m == "GET" and len(rest) in (1, 2):
                rec = c.get_activation(rest[0])
                if len(rest) == 1:
                    return self._send(200, rec)
                if rest[1] == "logs":
                    return self._send(200, {"logs": rec["logs"]})
                if rest[1] == "result":
                    return self._send(200, rec["response"])
        if collection in ("triggers", "rules"):
            status, body = self.triggers.route(collection, m, rest, q, self._json_body)
            return self._send(status, body, raw=b"" if body is None else None)
        raise ApiError(405 if collection in ("packages", "actions", "activations") else 404,
                       "The requested resource does not exist." if collection not in
                       ("packages", "actions", "activations") else f"Method {m} is not allowed here.")

    def _invoke(self, key: str, q: dict) -> None:
        c = self.controller
        action = c.get_action(key)
        args = self._json_body()
        blocking = q.get("blocking", "false").lower() == "true"
        result_only = q.get("result", "false").lower() == "true"
        aid, fut = c.start(key, action, args)
        hdr = {"x-openwhisk-activation-id": aid}
        if not blocking:
            return self._send(202, {"activationId": aid}, hdr)
        wait = min(BLOCKING_WAIT_S, (_int(q.get("timeout")) or 60000) / 1000)
        try:
            rec = fut.result(timeout=wait)
        except Exception:  # noqa: BLE001 - timed out waiting: answer 202 like OpenWhisk
            return self._send(202, {"activationId": aid}, hdr)
        ok = rec["response"]["success"]
        status = 200 if ok else 502
        if result_only:
            return self._send(status, rec["response"]["result"], hdr)
        return self._send(status, rec, hdr)

    # ---- web actions ---------------------------------------------------------------------------

    def _web(self, parts: list, raw_query: str) -> None:
        c = self.controller
        if len(parts) < 3:
            raise ApiError(404, "The requested resource does not exist.")
        ns, pkg, name, extra = parts[0], parts[1], parts[2], parts[3:]
        if ns not in (c.namespace,):
            raise ApiError(404, "The requested resource does not exist.")
        ext = ".http"
        for e in WEB_EXTENSIONS:
            if name.endswith(e):
                name, ext = name[: -len(e)], e
                break
        key = name if pkg == "default" else f"{pkg}/{name}"
        action = c.store.actions.get(key)
        if action is None or not truthy(ann(action, "web-export")):
            raise ApiError(404, "The requested resource does not exist.")
        secret = ann(action, "require-whisk-auth")
        if truthy(secret):
            if secret is True:
                ok = self._authorized()
            else:
                ok = self.headers.get("X-Require-Whisk-Auth") == str(secret)
            if not ok:
                self._body()
                return self._error(401, "The resource requires authentication, which was not supplied with the request")
        raw = self._body()
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in ("authorization", "x-require-whisk-auth")}
        args = self._web_args(action, raw, raw_query)
        if any(k.startswith("__ow_") and k not in ("__ow_body", "__ow_query") for k in args):
            raise ApiError(400, "Request defines parameters that are not allowed (e.g., reserved properties).")
        args.update({"__ow_method": self.command.lower(), "__ow_headers": headers, "__ow_path": "/".join(extra)})
        if truthy(secret):
            args["__ow_user"] = c.namespace
        aid, fut = c.start(key, action, args)
        hdr = {"x-openwhisk-activation-id": aid}
        try:
            rec = fut.result(timeout=BLOCKING_WAIT_S)
        except Exception:  # noqa: BLE001
            return self._send(202, {"activationId": aid}, hdr)
        resp = rec["response"]
        result = resp["result"]
        if not resp["success"]:
            status = 400 if resp["statusCode"] == 1 else 502
            err = result.get("error") if isinstance(result, dict) else "The action did not return a dictionary."
            return self._send(status, {"error": err, "code": aid}, hdr)
        return self._web_reply(ext, result, hdr)

    def _web_args(self, action: dict, raw: bytes, raw_query: str) -> dict:
        """A web action's parameters from the query and the body (by content type)."""
        args: dict = {}
        if truthy(ann(action, "raw-http")):
            args["__ow_query"] = raw_query
            if raw:
                args["__ow_body"] = base64.b64encode(raw).decode()
        else:
            for k, v in parse_qs(raw_query).items():
                args[k] = v[-1]
            if raw:
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                body = None
                if ctype in ("application/json", ""):
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = None
                if isinstance(body, dict):
                    args.update(body)
                elif ctype == "application/x-www-form-urlencoded":
                    args.update({k: v[-1] for k, v in parse_qs(raw.decode(errors="replace")).items()})
                elif ctype.startswith("text/"):
                    args["__ow_body"] = raw.decode(errors="replace")
                else:
                    args["__ow_body"] = base64.b64encode(raw).decode()
        return args

    def _web_reply(self, ext: str, result: Any, hdr: dict) -> None:
        """Answer a web action's successful result as its extension (.json/.text/.http) asks."""
        if ext == ".json":
            return self._send(200, result, hdr)
        if ext == ".text":
            return self._send(200, None, hdr, raw=str(result.get("text", "")).encode(), content_type="text/plain")
        if isinstance(result, dict) and any(k in result for k in ("body", "statusCode", "headers")):
            status = int(result.get("statusCode") or 200)
            h = {**(result.get("headers") or {}), **hdr}
            ctype = h.pop("Content-Type", h.pop("content-type", None))
            body = result.get("body", "")
            if isinstance(body, (dict, list)):
                return self._send(status, body, h)
            data = str(body).encode()
            if ctype and not ctype.startswith("text/") and "json" not in ctype:
                try:
                    data = base64.b64decode(body)
                except ValueError:
                    pass
            return self._send(status, None, h, raw=data, content_type=ctype or "text/html")
        return self._send(200, result, hdr)


def _int(v) -> Optional[int]:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        raise ApiError(400, f"'{v}' is not an integer.") from None


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the stdlib default of 5 reset connections under 20 concurrent clients


def make_server(home: Optional[Path], host: str = "127.0.0.1", port: int = 3233, idle_seconds: float = 600.0,
                docker_client=None) -> tuple:
    """(server, controller). The apihost handed to actions is this server's address."""
    from mlfn.targets.local.pool import Pool
    from mlfn.targets.local.store import Store

    store = Store(home)
    handler = type("BoundHandler", (Handler,), {"auth": local_key(home).auth if home else GUEST_AUTH})
    server = LocalServer((host, port), handler)
    apihost = f"http://{host}:{server.server_address[1]}"
    pool = Pool(owner=owner_id(home), idle_seconds=idle_seconds, docker_client=docker_client, apihost=apihost)
    pool.remove_stale()
    controller = Controller(store, pool, namespace=GUEST_NAMESPACE)
    handler.controller = controller
    handler.triggers = Triggers(controller)
    return server, controller


def close(server, controller) -> None:
    server.shutdown()
    server.server_close()
    controller.pool.shutdown()
    controller.executor.shutdown(wait=False, cancel_futures=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlfn.targets.local.api")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3233)
    p.add_argument("--home", default=None)
    p.add_argument("--idle-seconds", type=float, default=600.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlfn.targets.local").setLevel(logging.INFO)
    home = Path(a.home) if a.home else state_dir()
    server, controller = make_server(home, a.host, a.port, a.idle_seconds)
    stop = threading.Event()

    def _term(*_):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    log.info("mlfn local OpenWhisk API on http://%s:%d (state in %s)", a.host, server.server_address[1], home)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        controller.pool.shutdown()
        controller.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped; action containers removed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
