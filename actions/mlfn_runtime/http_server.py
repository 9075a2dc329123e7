"""One HTTP/1.1 server on one port for every protocol the function speaks.

    srv = make_server("/opt/mlfn/function", "127.0.0.1", 0)   # models loaded here
    threading.Thread(target=srv.serve_forever).start()
    ...; srv.shutdown(); srv.drain(); srv.server_close()

The routes and which protocol module answers each are in `mlfn_runtime.routes`. This
module admits a request (the route's `admit`, before its body is read), reads the body
(`request_body`: the route's limit, decompressed as it streams), runs the route's handler
(inside one of `serving.workers` slots unless the route is not limited), turns errors into
`{"error": ...}` with the status `errors.describe_error` gives, writes the response and
counts it in the metrics. The stdlib ThreadingHTTPServer serves one thread per connection
with keep-alive and TCP_NODELAY; `connections` bounds them (serving.max_connections; 503
beyond) and gives every phase a deadline: waiting for a keep-alive request
(idle_timeout_seconds), the request line and headers (header_timeout_seconds), the body
and the answer's write (body_timeout_seconds). SIGTERM (`serve`) stops accepting, lets
in-flight requests finish within serving.drain_seconds, closes idle keep-alive
connections, cuts off what remains at the deadline and exits 0.
"""
from __future__ import annotations

import email.utils
import io
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

from mlfn_runtime import dispatch, routes
from mlfn_runtime.connections import Connections, DeadlineReader, Refuser
from mlfn_runtime.errors import RuntimeFunctionError
from mlfn_runtime.http_messages import Response, encode_json
from mlfn_runtime.request_body import read_body
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
# An idle wait that ends this much later than its deadline was frozen (OpenWhisk pauses idle
# containers): the invoker may send its next request right after unpausing, so the
# connection is kept and the idle wait starts again rather than racing that request.
PAUSED_SLACK_SECONDS = 2.0


class RequestTimeout(RuntimeFunctionError):
    """The body did not arrive before serving.body_timeout_seconds."""

    status = 408


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on small responses
    # Reads have per-phase deadlines (DeadlineReader); the idle one is long
    # (serving.idle_timeout_seconds) so the platform's proxy, which owns its keep-alive pool,
    # closes first, and a frozen container does not count as idle (PAUSED_SLACK_SECONDS).
    timeout = None
    server_version = "mlfn"
    sys_version = ""
    state: ServerState  # set by make_server

    # keep-alive connections are tracked so SIGTERM can close the idle ones
    def setup(self):
        super().setup()
        self.rfile.close()
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)
        self.server.connections.track(self, idle=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.connections.untrack(self)

    def handle_one_request(self):
        self.server.connections.track(self, idle=True)
        if not self._await_request():
            self.close_connection = True
            return
        self.reader.deadline = time.monotonic() + self.state.serving.header_timeout_seconds
        super().handle_one_request()

    def _await_request(self) -> bool:
        """Wait up to serving.idle_timeout_seconds for a request's first byte (or EOF)."""
        while True:
            self.reader.deadline = time.monotonic() + self.state.serving.idle_timeout_seconds
            try:
                self.rfile.peek(1)
                return True
            except TimeoutError:
                if time.monotonic() - self.reader.deadline < PAUSED_SLACK_SECONDS:
                    return False
            except OSError:
                return False

    def parse_request(self):
        if self.raw_requestline == b"PRI * HTTP/2.0\r\n":  # HTTP/2 with prior knowledge: gRPC and REST (h2c)
            from mlfn_runtime import h2c

            self.close_connection = True
            h2c.serve_connection(self.state, self.connection, self.rfile)
            return False
        ok = super().parse_request()
        self.server.connections.track(self, idle=False)
        return ok

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors (bad request line, headers too long, ...) as JSON too."""
        self.close_connection = True
        body = encode_json({"error": message or self.responses.get(code, ("error",))[0]})
        try:
            self.connection.settimeout(self.state.serving.body_timeout_seconds)
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
        route, params = routes.match(self.command, path)
        bodies = []

        def read_body() -> bytes:
            bodies.append(self._read_body(route))
            return bodies[-1]

        resp = dispatch.answer(state, route, params, self.command, path, dict(parse_qsl(parts.query)), self.headers,
                               read_body, f"{self.command} {path}")
        if not bodies and (self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0"):
            self.close_connection = True  # refused before its body was read (auth): the rest is unread
        if state.draining:
            self.close_connection = True
        try:
            resp = self._send(resp)
        finally:
            state.metrics.observe(resp.model or params.get("name", ""), route.endpoint, resp.status,
                                  time.perf_counter() - t0)

    def _read_body(self, route: routes.Route) -> bytes:
        """Admit the request, then read its body before the body deadline; the connection
        closes after any failure (the rest of the body is unread)."""
        serving = self.state.serving
        try:
            if route.admit is not None:
                route.admit(self.state)
            limit = route.body_limit(serving)
            if limit <= 0:
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te or (self.headers.get("Content-Length") or "0").strip() != "0":
                    # a route that takes no body (or no route): its handler answers (404, 405, ...);
                    # the body is not read, so the connection cannot be reused
                    self.close_connection = True
                return b""
            self.reader.deadline = time.monotonic() + serving.body_timeout_seconds
            return read_body(self.rfile, self.headers, limit, route.limit_name)
        except TimeoutError:
            self.close_connection = True
            raise RequestTimeout(f"the request body did not arrive within {serving.body_timeout_seconds:g} s "
                                 f"(serving.body_timeout_seconds)") from None
        except BaseException:
            self.close_connection = True
            raise

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
            self.connection.settimeout(self.state.serving.body_timeout_seconds)  # a client that does not read
            self.wfile.write(self._head(resp.status, headers, len(data)) + (data if self.command != "HEAD" else b""))
        except OSError:  # the client went away (reset, broken pipe, ...)
            self.close_connection = True
        return resp

    def _head(self, status: int, headers: dict, length: int) -> bytes:
        """Status line and headers, as send_response/send_header write them, in one piece with
        the body (one send, one packet: the stdlib's two writes cost a syscall and a segment)."""
        self.log_request(status)
        if self.request_version == "HTTP/0.9":
            return b""
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}\r\n"
                 f"Server: {self.server_version}\r\nDate: {_http_date()}\r\n"]
        for k, v in headers.items():
            lines.append(f"{k}: {v}\r\n")
            if k.lower() == "connection" and v.lower() == "close":
                self.close_connection = True
        lines.append(f"Content-Length: {length}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1", "strict")


_date = [(0, "")]  # (second, its HTTP date), replaced whole: formatted once a second, not once a request


def _http_date() -> str:
    now = int(time.time())
    second, text = _date[0]
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date[0] = (now, text)
    return text


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most serving.max_connections connections (503 beyond),
    which knows them for a graceful drain with a deadline."""

    daemon_threads = True  # a request stuck past the drain deadline does not keep the process alive
    block_on_close = False  # drain() waits, with a deadline
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, state: ServerState):
        self.state = state
        cap = state.serving.max_connections
        self.connections = Connections(cap)
        self.refuser = Refuser(encode_json({"error": f"the function is serving its maximum of {cap} connections "
                                                     f"(serving.max_connections); retry shortly"}))
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        """In the accepting thread: a thread for the connection, or a 503 beyond the cap."""
        if not self.connections.admit():
            self.refuser.refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (e.g. out of threads): the slot is free again
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def server_close(self):
        super().server_close()
        self.refuser.close()

    def drain(self, seconds: Optional[float] = None) -> int:
        """Stop taking requests on keep-alive connections and let in-flight ones finish
        within `seconds` (default serving.drain_seconds); then cut off what remains.
        Returns how many connections were cut off."""
        self.state.draining = True
        return self.connections.drain(self.state.serving.drain_seconds if seconds is None else seconds)

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
        log(f"received {signal.Signals(signum).name}; finishing in-flight requests "
            f"(at most {state.serving.drain_seconds:g} s, serving.drain_seconds)")
        state.draining = True
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        srv.server_close()  # no new connections while draining: they are refused, not queued
        t_drain = time.perf_counter()
        cut = srv.drain()
    log(f"stopped; drained in {time.perf_counter() - t_drain:.2f} s"
        + (f", {cut} connection(s) cut off at the deadline" if cut else ""))
    return 0
