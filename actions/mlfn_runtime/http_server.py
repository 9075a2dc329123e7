"""One HTTP/1.1 server on one port for every protocol the function speaks.

    srv = make_server("/opt/mlfn/function", "127.0.0.1", 0)   # models loaded here
    threading.Thread(target=srv.serve_forever).start()
    ...; srv.shutdown(); srv.drain(); srv.server_close()

The routes and which protocol module answers each are in `mlfn_runtime.routes`. This
module reads requests (Content-Length or chunked bodies, gzip/deflate, the route's body
limit), runs the route's handler (inside one of `serving.workers` slots unless the route
is not limited), turns errors into `{"error": ...}` with the status `errors.describe_error`
gives, writes the response and counts it in the metrics. The stdlib ThreadingHTTPServer
serves one thread per connection with keep-alive and TCP_NODELAY. SIGTERM (`serve`) stops
accepting, lets in-flight requests finish, closes idle keep-alive connections and exits 0.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

from mlfn_runtime import routes
from mlfn_runtime.errors import InvalidInput, PayloadTooLarge
from mlfn_runtime.http_messages import Request, Response, encode_json, error_response
from mlfn_runtime.runtime_log import log
from mlfn_runtime.server_state import ServerState


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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on small responses
    # No idle timeout: the platform's proxy (OpenWhisk invoker, Knative queue-proxy) owns its
    # keep-alive pool, and a server-side close can race a request sent on that connection
    # (e.g. right after OpenWhisk unpauses the container). SIGTERM closes idle connections.
    timeout = None
    server_version = "mlfn"
    sys_version = ""
    state: ServerState  # set by make_server

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
        if self.raw_requestline == b"PRI * HTTP/2.0\r\n":  # HTTP/2 with prior knowledge: gRPC and REST (h2c)
            from mlfn_runtime import h2c

            self.close_connection = True
            h2c.serve_connection(self.state, self.connection, self.rfile)
            return False
        ok = super().parse_request()
        self.server.track(self, idle=False)
        return ok

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors (bad request line, headers too long, ...) as JSON too."""
        self.close_connection = True
        body = encode_json({"error": message or self.responses.get(code, ("error",))[0]})
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
        state = self.state
        state.metrics.start()
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        route, params, req = routes.UNKNOWN, {}, None
        try:
            route, params = routes.match(self.command, path)
            body = self._read_body(route.body_limit(state.serving.max_payload_bytes))
            req = Request(self.command, path, dict(parse_qsl(parts.query)), self.headers, body)
            if route.limited:
                with state.slots:
                    resp = route.handler(state, req, params)
            else:
                resp = route.handler(state, req, params)
        except Exception as e:
            resp = error_response(e, f"{self.command} {path}")
            if isinstance(e, PayloadTooLarge):
                self.close_connection = True
        if state.draining:
            self.close_connection = True
        if req is not None:
            state.payload_log.record(route.endpoint, req, resp)  # queued: never blocks the request
        try:
            resp = self._send(resp)
        finally:
            state.metrics.observe(resp.model or params.get("name", ""), route.endpoint, resp.status,
                                  time.perf_counter() - t0)

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
                data = encode_json(body if body is not None else {})
            except (TypeError, ValueError) as e:  # a result JSON cannot hold: answer, do not drop the connection
                log(f"{self.command} {self.path}: the response cannot be encoded as JSON: {e}")
                resp = Response(500, None, model=resp.model)
                data = encode_json({"error": f"internal error: the result cannot be encoded as JSON ({e})"})
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


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections (for a graceful drain)."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, state: ServerState):
        self.state = state
        self._conns: dict = {}
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, handler, idle: bool) -> None:
        with self._conns_lock:
            self._conns[handler] = idle
        if idle and self.state.draining:
            self._close_idle(handler)

    def untrack(self, handler) -> None:
        with self._conns_lock:
            self._conns.pop(handler, None)

    def drain(self) -> None:
        """Stop taking requests on keep-alive connections; in-flight ones finish."""
        self.state.draining = True
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
    state = ServerState(function)
    handler = type("BoundHandler", (Handler,), {"state": state})
    srv = Server((host, port), handler, state)
    state.metrics.startup_seconds = time.time() - PROCESS_START
    return srv


def serve(function_dir: Optional[str] = None, host: str = "0.0.0.0", port: int = 8080) -> int:
    """Serve until SIGTERM/SIGINT; then drain in-flight requests and return 0."""
    t0 = time.perf_counter()
    srv = make_server(function_dir, host, port)
    state = srv.state
    fn = state.function
    what = f"function '{fn.name}' (models: {', '.join(fn.models)})" if fn else "no model (code actions only)"
    log(f"serving {what} on {host}:{srv.port}; loaded in {(time.perf_counter() - t0) * 1000:.0f} ms, "
        f"{state.metrics.startup_seconds * 1000:.0f} ms since process start")

    def stop(signum, frame):
        log(f"received {signal.Signals(signum).name}; finishing in-flight requests")
        state.draining = True
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
