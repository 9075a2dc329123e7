"""One HTTP/1.1 server on one port for every protocol the function speaks.

    srv = make_server("/opt/mlfn/function", "127.0.0.1", 0)   # models loaded here
    threading.Thread(target=srv.serve_forever).start()
    ...; srv.shutdown(); srv.server_close()

Routes:
    POST /init, POST /run                      OpenWhisk action protocol (mlfn_runtime.openwhisk)
    POST /predict                              JSON (actions/README.md) or a raw image/* body
    GET  /healthz                              readiness (200 ready, 503 loading or draining)
    GET  /metrics                              Prometheus text (mlfn_runtime.metrics)
    /v2, /v2/health/*, /v2/models/{name}[/versions/{v}][/ready|/infer]   Open Inference Protocol
    /v1/models/{name}[/versions/{v}][/metadata|:predict]                 TensorFlow Serving REST

Handlers only decode the request, call the data plane (`Function`), and encode; errors
become `{"error": "..."}` with the status of `errors.status_of` here, in one place
(500s log their traceback). The stdlib ThreadingHTTPServer serves one thread per
connection with keep-alive and TCP_NODELAY. SIGTERM (`serve`) stops accepting, lets
in-flight requests finish, closes idle keep-alive connections and exits 0.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

from mlfn_runtime import oip, tfserving
from mlfn_runtime.errors import (
    InvalidInput, MethodNotAllowed, NotFound, NotReady, PayloadTooLarge, RuntimeFunctionError, status_of,
)
from mlfn_runtime.metrics import Metrics
from mlfn_runtime.openwhisk import ActionProxy

INIT_LIMIT = 64 * 1024 * 1024  # /init carries code: OpenWhisk allows 48 MB of base64
RUN_ENVELOPE = 16 * 1024  # /run wraps the payload in a few activation fields


def _process_start() -> float:
    """Wall-clock time this process started (from /proc; module import time elsewhere)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


PROCESS_START = _process_start()


def log(message: str) -> None:
    prefix = "mlfn_runtime"
    svc, rev = os.environ.get("K_SERVICE"), os.environ.get("K_REVISION")
    if svc or rev:
        prefix += f" [{svc or '-'}/{rev or '-'}]"
    try:
        sys.stderr.write(f"{prefix}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Response:
    __slots__ = ("status", "body", "headers", "model")

    def __init__(self, status: int = 200, body: Any = None, headers: Optional[dict] = None, model: str = ""):
        self.status, self.body, self.headers, self.model = status, body, headers or {}, model


class App:
    """What the handlers share: the function, the OpenWhisk proxy, metrics, readiness."""

    def __init__(self, function=None, function_dir: Optional[str] = None):
        self.function = function
        self.function_dir = function_dir
        self.metrics = Metrics(os.environ.get("K_SERVICE"), os.environ.get("K_REVISION"))
        self.proxy = ActionProxy(function, log=log)
        self.draining = False
        self.ready = function is not None
        if function is not None:
            for name, m in function.models.items():
                self.metrics.load_seconds[name] = m.runner.load_seconds
        self.max_payload = function.serving.max_payload_bytes if function else 1048576
        # serving.workers bounds the requests doing work at once (connections are not bounded)
        self.slots = threading.BoundedSemaphore(function.serving.workers if function else 8)

    def require_function(self):
        # while draining, requests already accepted still complete (only /healthz says 503)
        if self.function is None:
            raise NotReady("this image holds no model (no function.json); initialize it with code via /init")
        return self.function

    def model_entry(self, name: str, version: Optional[str] = None):
        """The bundled model `name` for the OIP v2 and TF Serving routes (one version: 1)."""
        entry = self.require_function().model(name)
        if version not in (None, "", "1"):
            raise NotFound(f"model '{name}' has no version '{version}' (this function serves version 1)")
        return entry

    # ------------------------------------------------------------------ routing
    def route(self, method: str, path: str):
        """(endpoint label, handler(req) -> Response, body limit) for a request line."""
        if path == "/run":
            return "run", self._only(method, "POST", self.run), self.max_payload + RUN_ENVELOPE
        if path == "/init":
            return "init", self._only(method, "POST", self.init), INIT_LIMIT
        if path in ("/predict", "/"):
            return "predict", self._only(method, "POST", self.predict), self.max_payload
        if path in ("/healthz", "/readyz", "/health"):
            return "health", self._only(method, ("GET", "HEAD"), self.health), 0
        if path == "/livez":
            return "health", self._only(method, ("GET", "HEAD"), lambda r: Response(200, {"live": True})), 0
        if path == "/metrics":
            return "metrics", self._only(method, "GET", self.metrics_text), 0
        if path == "/v2" or path.startswith("/v2/"):
            endpoint, fn, want = oip.route(self, path)
            return endpoint, self._only(method, want, fn), self.max_payload
        if path.startswith("/v1/models/"):
            endpoint, fn, want = tfserving.route(self, path)
            return endpoint, self._only(method, want, fn), self.max_payload
        return "unknown", self._not_found, 0

    @staticmethod
    def _only(method, allowed, fn):
        allowed = (allowed,) if isinstance(allowed, str) else allowed
        if method in allowed:
            return fn

        def refuse(req):
            raise MethodNotAllowed(f"{req.path} takes {' or '.join(allowed)}, not {method}")

        return refuse

    @staticmethod
    def _not_found(req):
        raise NotFound(f"no route {req.path}; try POST /predict, POST /run, /v2/models/..., /v1/models/...")

    # ------------------------------------------------------------------ handlers
    def init(self, req) -> Response:
        status, body = self.proxy.init(req.json(allow_empty=True))
        return Response(status, body)

    def run(self, req) -> Response:
        status, body = self.proxy.run(req.json())
        model = body.get("model") if isinstance(body, dict) else None
        return Response(status, body, model=model if isinstance(model, str) else "")

    def predict(self, req) -> Response:
        fn = self.require_function()
        ctype = req.content_type
        if ctype.startswith("image/") or ctype == "application/octet-stream":
            if not req.body:
                raise InvalidInput("the request body is empty; send an image")
            request = {"image": req.body}
            for k, v in req.query.items():
                if k in ("model",):
                    request[k] = v
        else:
            request = req.json()
        result = fn.predict(request)
        return Response(200, result, model=result.get("model", "") if isinstance(result, dict) else "")

    def health(self, req) -> Response:
        if self.draining:
            return Response(503, {"ready": False, "reason": "shutting down"})
        if not self.ready:
            return Response(503, {"ready": False, "reason": "no function loaded"})
        fn = self.function
        return Response(200, {"ready": True, "function": fn.name if fn else None,
                              "models": list(fn.models) if fn else []})

    def metrics_text(self, req) -> Response:
        return Response(200, self.metrics.render().encode(), {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


class Request:
    """A decoded request: method, path, query, headers, body bytes."""

    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, method, path, query, headers, body):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self, allow_empty: bool = False) -> Any:
        if not self.body:
            if allow_empty:
                return {}
            raise InvalidInput("the request body is empty; send a JSON object")
        try:
            return json.loads(self.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput("the request body is not UTF-8 JSON (send images with Content-Type: image/*)") from None
        except ValueError as e:
            raise InvalidInput(f"the request body is not valid JSON: {e}") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on small responses
    # No idle timeout: the platform's proxy (OpenWhisk invoker, Knative queue-proxy) owns its
    # keep-alive pool, and a server-side close can race a request sent on that connection
    # (e.g. right after OpenWhisk unpauses the container). SIGTERM closes idle connections.
    timeout = None
    server_version = "mlfn"
    sys_version = ""
    app: App  # set by make_server

    # keep-alive connections are tracked so SIGTERM can close the idle ones
    def setup(self):
        super().setup()
        self.server.track(self, idle=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.untrack(self)

    def handle_one_request(self):
        self.server.track(self, idle=True)
        super().handle_one_request()

    def parse_request(self):
        ok = super().parse_request()
        self.server.track(self, idle=False)
        return ok

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors (bad request line, headers too long, ...) as JSON too."""
        self.close_connection = True
        body = _dumps({"error": message or self.responses.get(code, ("error",))[0]})
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # access logs off unless asked (stderr is the activation log)
        if os.environ.get("MLFN_ACCESS_LOG"):
            log(format % args)

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _dispatch(self):
        t0 = time.perf_counter()
        app = self.app
        app.metrics.start()
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        endpoint, handler, limit = "unknown", None, 0
        model = ""
        try:
            endpoint, handler, limit = app.route(self.command, path)
            body = self._read_body(limit)
            req = Request(self.command, path, dict(parse_qsl(parts.query)), self.headers, body)
            if endpoint in ("health", "metrics") or endpoint.endswith(("_live", "_ready")):
                resp = handler(req)
            else:
                with app.slots:
                    resp = handler(req)
            model = resp.model
        except RuntimeFunctionError as e:
            resp = Response(status_of(e), {"error": str(e)})
            if isinstance(e, PayloadTooLarge):
                self.close_connection = True
            if resp.status >= 500:
                log(f"{self.command} {path}: {e}")
        except Exception as e:
            import traceback

            log(f"{self.command} {path} failed:\n{traceback.format_exc().rstrip()}")
            resp = Response(500, {"error": f"internal error: {e.__class__.__name__}: {e}"})
        if not model:
            model = _model_from_path(path)
        if app.draining:
            self.close_connection = True
        try:
            resp = self._send(resp)
        finally:
            app.metrics.observe(model, endpoint, resp.status, time.perf_counter() - t0)

    def _read_body(self, limit: int) -> bytes:
        body = self._read_raw_body(limit)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("identity", "") or not body:
            return body
        if encoding not in ("gzip", "deflate"):
            raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
        import zlib

        d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            out = d.decompress(body, limit + 1)  # bounded: no zip bombs
        except zlib.error as e:
            raise InvalidInput(f"the {encoding} request body cannot be decompressed: {e}") from None
        if len(out) > limit:
            raise PayloadTooLarge(
                f"the request body is more than {limit} bytes decompressed (serving.max_payload_bytes)"
            )
        return out

    def _read_raw_body(self, limit: int) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if limit <= 0 and ("chunked" in te or (self.headers.get("Content-Length") or "0").strip() != "0"):
            # a route that takes no body (or no route): its handler answers (404, 405, ...);
            # the body is not read, so the connection cannot be reused
            self.close_connection = True
            return b""
        if "chunked" in te:
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError(n)
        except ValueError:
            self.close_connection = True
            raise InvalidInput("Content-Length is not a non-negative number") from None
        if n > limit:
            self.close_connection = True
            raise PayloadTooLarge(
                f"the request body is {n} bytes; this function takes at most {limit} (serving.max_payload_bytes)"
            )
        return self.rfile.read(n)

    def _read_chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(65537)
            try:
                field = line.split(b";")[0].strip()
                if not field or field.startswith((b"-", b"+")):  # int() takes a sign; read(-1) would read to EOF
                    raise ValueError(field)
                size = int(field, 16)
            except ValueError:
                self.close_connection = True
                raise InvalidInput("malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            if len(out) + size > limit:
                self.close_connection = True
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes (serving.max_payload_bytes)")
            out += self.rfile.read(size)
            self.rfile.readline(3)

    def _send(self, resp: Response) -> Response:
        """Write `resp`; returns what was sent (a 500 when its body cannot be encoded)."""
        body = resp.body
        headers = dict(resp.headers)
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            try:
                data = _dumps(body if body is not None else {})
            except (TypeError, ValueError) as e:  # a result JSON cannot hold: answer, do not drop the connection
                log(f"{self.command} {self.path}: the response cannot be encoded as JSON: {e}")
                resp = Response(500, None, model=resp.model)
                data = _dumps({"error": f"internal error: the result cannot be encoded as JSON ({e})"})
                headers = {"Content-Type": "application/json"}
            headers.setdefault("Content-Type", "application/json")
        try:
            self.send_response(resp.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client went away (reset, broken pipe, ...)
            self.close_connection = True
        return resp


def _dumps(obj) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # NaN/Inf in a model output: JSON has no such numbers
        return json.dumps(_nan_to_none(obj), separators=(",", ":")).encode()


def _nan_to_none(x):
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def _model_from_path(path: str) -> str:
    for prefix in ("/v2/models/", "/v1/models/"):
        if path.startswith(prefix):
            return path[len(prefix):].split("/")[0].split(":")[0]
    return ""


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections (for a graceful drain)."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, app: App):
        self.app = app
        self._conns: dict = {}
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, handler, idle: bool) -> None:
        with self._conns_lock:
            self._conns[handler] = idle
        if idle and self.app.draining:
            self._close_idle(handler)

    def untrack(self, handler) -> None:
        with self._conns_lock:
            self._conns.pop(handler, None)

    def drain(self) -> None:
        """Stop taking requests on keep-alive connections; in-flight ones finish."""
        self.app.draining = True
        with self._conns_lock:
            idle = [h for h, is_idle in self._conns.items() if is_idle]
        for h in idle:
            self._close_idle(h)

    @staticmethod
    def _close_idle(handler) -> None:
        try:
            handler.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    @property
    def port(self) -> int:
        return self.server_address[1]


def make_server(function_dir: Optional[str] = None, host: str = "0.0.0.0", port: int = 8080, function=None) -> Server:
    """Load the function (models, pipelines) and bind the server; call `serve_forever()`.

    `function_dir` None means an image without a model (a code action is sent at /init)."""
    sys.dont_write_bytecode = True  # read-only root filesystems: never write .pyc
    if function is None and function_dir:
        from mlfn_runtime.function import load_function

        function = load_function(function_dir)
    app = App(function, function_dir)
    handler = type("BoundHandler", (Handler,), {"app": app})
    srv = Server((host, port), handler, app)
    app.metrics.startup_seconds = time.time() - PROCESS_START
    return srv


def serve(function_dir: Optional[str] = None, host: str = "0.0.0.0", port: int = 8080) -> int:
    """Serve until SIGTERM/SIGINT; then drain in-flight requests and return 0."""
    t0 = time.perf_counter()
    srv = make_server(function_dir, host, port)
    app = srv.app
    fn = app.function
    what = f"function '{fn.name}' (models: {', '.join(fn.models)})" if fn else "no model (code actions only)"
    log(f"serving {what} on {host}:{srv.port}; loaded in {(time.perf_counter() - t0) * 1000:.0f} ms, "
        f"{app.metrics.startup_seconds * 1000:.0f} ms since process start")

    def stop(signum, frame):
        log(f"received {signal.Signals(signum).name}; finishing in-flight requests")
        app.draining = True
        threading.Thread(target=lambda: (srv.shutdown(), srv.drain()), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        srv.drain()
        srv.server_close()  # joins the handler threads: in-flight requests complete
    log("stopped")
    return 0
