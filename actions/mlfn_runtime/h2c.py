"""HTTP/2 cleartext with prior knowledge (h2c) on the function's one port: gRPC
(`grpc_service`) and every REST route (`routes`) over HTTP/2, as Knative's queue-proxy
speaks once the container port is named `h2c`.

`http_server` hands a connection whose first line is the HTTP/2 preface (`PRI * HTTP/2.0`)
to `serve_connection`; the `h2` package (sans-IO, pure Python; in the image only with
serving.grpc) parses frames. One thread reads the connection; each finished request stream
is answered in a thread of the connection's pool (inside a serving.workers slot, as over
HTTP/1.1), and
responses are written under one lock, respecting the client's flow-control windows.
A gRPC message is a 5-byte prefix (compressed flag, big-endian length) + protobuf bytes;
a request larger than serving.max_payload_bytes is answered at once (RESOURCE_EXHAUSTED /
413) and the rest of its stream refused. On SIGTERM (state.draining) the connection sends
GOAWAY, finishes the streams it took and closes."""
from __future__ import annotations

import select
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPMessage
from urllib.parse import parse_qsl, quote, urlsplit

from mlfn_runtime import dispatch, routes
from mlfn_runtime.errors import InvalidInput, PayloadTooLarge
from mlfn_runtime.http_messages import Response, encode_json
from mlfn_runtime.runtime_log import log

try:
    from mlfn_runtime import grpc_service, h2c_frames
except ImportError:  # no `h2`/`protobuf` in this image (serving.grpc off)
    grpc_service = h2c_frames = None

PREFACE_LINE = b"PRI * HTTP/2.0\r\n"  # what http_server reads as the request line
PREFACE_REST = b"\r\nSM\r\n\r\n"
GRPC_PREFIX = 5
WINDOW = 1 << 20  # receive window per stream and connection
MAX_STREAMS = 64


def serve_connection(state, sock, rfile) -> None:
    """Serve one h2c connection whose request line `PREFACE_LINE` was already read from `rfile`."""
    if h2c_frames is None:
        log("an HTTP/2 (h2c) connection arrived, but this image has no HTTP/2 support "
            "(build it with serving.grpc: true); closed it")
        return
    timeout = sock.gettimeout()
    sock.settimeout(10)  # a client sends its SETTINGS right after the preface
    try:
        rest = rfile.read(len(PREFACE_REST))
        first = rfile.read1(1 << 16) if rest == PREFACE_REST else b""
    except OSError:
        return
    finally:
        sock.settimeout(timeout)
    if rest != PREFACE_REST:
        return
    H2cConnection(state, sock).serve(PREFACE_LINE + rest + first)


class _Stream:
    """A request stream being received: its headers, body and body limit."""

    __slots__ = ("headers", "body", "limit", "too_large")

    def __init__(self, headers: dict, limit: int):
        self.headers, self.body, self.limit, self.too_large = headers, bytearray(), limit, False

    @property
    def is_grpc(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/grpc")


class H2cConnection:
    def __init__(self, state, sock):
        self.state, self.sock = state, sock
        self.conn = h2c_frames.new_server_connection(WINDOW, MAX_STREAMS)
        self.cond = threading.Condition()  # guards self.conn and the socket's writes
        self.streams: dict = {}
        # answers run in reused threads (a thread per request costs more than a small inference)
        self.workers = ThreadPoolExecutor(max_workers=MAX_STREAMS, thread_name_prefix="h2c")
        self.pending: set = set()
        self.open = True

    def serve(self, data: bytes) -> None:
        with self.cond:
            h2c_frames.start(self.conn, WINDOW)
            self._flush()
        goaway = False
        while self.open and data is not None:
            if data and not self._receive(data):
                break
            if self.state.draining and not goaway:
                with self.cond:
                    h2c_frames.goaway(self.conn)
                    self._flush()
                goaway = True
            if goaway and not self.pending:
                break
            data = self._read()
        self.workers.shutdown(wait=True)
        with self.cond:
            self.open = False
            self.cond.notify_all()

    def _read(self):
        """Bytes from the client; b"" when none came within 0.5 s; None at EOF."""
        try:
            ready, _, _ = select.select([self.sock], [], [], 0.5)
            if not ready:
                return b""
            return self.sock.recv(1 << 16) or None
        except (OSError, ValueError):
            return None

    def _receive(self, data: bytes) -> bool:
        with self.cond:
            try:
                events = self.conn.receive_data(data)
            except h2c_frames.ProtocolError as e:
                h2c_frames.fail(self.conn, e)
                self._flush()
                return False
            for event in events:
                self._on_event(h2c_frames.classify(event), event)
            self._flush()
            self.cond.notify_all()
        return self.open

    def _on_event(self, kind: str, event) -> None:
        if kind == "request":
            headers = dict(event.headers)
            self.streams[event.stream_id] = _Stream(headers, self._body_limit(headers))
        elif kind == "data":
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is None or stream.limit == 0:
                return  # a refused stream, or a route that takes no body
            stream.body += event.data
            if len(stream.body) > stream.limit:
                stream.too_large, stream.body = True, bytearray()
                self._start(event.stream_id, self.streams.pop(event.stream_id))
        elif kind == "ended":
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                self._start(event.stream_id, stream)
        elif kind == "reset":
            self.streams.pop(event.stream_id, None)
        elif kind == "terminated":
            self.open = False

    def _body_limit(self, headers: dict) -> int:
        max_payload = self.state.serving.max_payload_bytes
        if headers.get("content-type", "").startswith("application/grpc"):
            return max_payload + GRPC_PREFIX
        path = urlsplit(headers.get(":path", "/")).path.rstrip("/") or "/"
        route, _ = routes.match(headers.get(":method", "GET"), path)
        return route.body_limit(self.state.serving)

    def _start(self, stream_id: int, stream: _Stream) -> None:
        self.pending.add(stream_id)
        self.workers.submit(self._answer, stream_id, stream).add_done_callback(
            lambda _: self.pending.discard(stream_id))

    def _answer(self, stream_id: int, stream: _Stream) -> None:
        t0 = time.perf_counter()
        self.state.metrics.start()
        model, endpoint, status = "", "unknown", 500
        try:
            if stream.is_grpc:
                reply = self._grpc(stream)
                model, endpoint, status = reply.model, reply.endpoint, reply.status
                self._send_grpc(stream_id, reply, stream.too_large)
            else:
                resp, endpoint = self._rest(stream)
                model, status = resp.model, resp.status
                self._send_rest(stream_id, resp, stream)
        finally:
            self.state.metrics.observe(model, endpoint, status, time.perf_counter() - t0)

    def _grpc(self, stream: _Stream):
        path = stream.headers.get(":path", "")
        try:
            message = unframe(stream, self.state.serving.max_payload_bytes)
        except (InvalidInput, PayloadTooLarge) as e:
            return grpc_service.error_reply(e, path)
        return grpc_service.call(self.state, path, message, stream.headers)

    def _rest(self, stream: _Stream):
        """(response, metrics endpoint) of a REST route over h2c."""
        method = stream.headers.get(":method", "GET")
        parts = urlsplit(stream.headers.get(":path", "/"))
        path = parts.path.rstrip("/") or "/"
        route, params = routes.match(method, path)

        def read_body() -> bytes:  # the stream is already received: admit and check it as HTTP/1.1 does
            if route.admit is not None:
                route.admit(self.state)
            if stream.too_large:
                limit = route.body_limit(self.state.serving)
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes ({route.limit_name})")
            encoding = (stream.headers.get("content-encoding") or "identity").strip().lower()
            if encoding not in ("identity", ""):
                raise InvalidInput(f"Content-Encoding {encoding!r} is not supported over HTTP/2; send the body uncompressed")
            return bytes(stream.body)

        resp = dispatch.answer(self.state, route, params, method, path, dict(parse_qsl(parts.query)),
                               _headers(stream.headers), read_body, f"{method} {path} (h2c)")
        return resp, route.endpoint

    def _send_grpc(self, stream_id: int, reply, refuse_rest: bool) -> None:
        trailers = [("grpc-status", str(reply.code))]
        if reply.message:
            trailers.append(("grpc-message", quote(reply.message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
        head = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity,deflate,gzip")]
        if reply.code != grpc_service.OK:  # trailers-only
            self._send(stream_id, head + trailers, b"", None, refuse_rest)
        else:
            body = b"\0" + len(reply.body).to_bytes(4, "big") + reply.body
            self._send(stream_id, head, body, trailers, refuse_rest)

    def _send_rest(self, stream_id: int, resp: Response, stream: _Stream) -> None:
        headers = dict(resp.headers)
        if isinstance(resp.body, (bytes, bytearray)):
            data = bytes(resp.body)
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            try:
                data = encode_json(resp.body if resp.body is not None else {})
            except (TypeError, ValueError) as e:
                resp.status, data = 500, encode_json({"error": f"internal error: the result cannot be encoded as JSON ({e})"})
            headers.setdefault("Content-Type", "application/json")
        if stream.headers.get(":method") == "HEAD":
            data = b""
        head = [(":status", str(resp.status))] + [(k.lower(), str(v)) for k, v in headers.items()]
        head.append(("content-length", str(len(data))))
        self._send(stream_id, head, data, None, stream.too_large)

    def _send(self, stream_id: int, headers: list, body: bytes, trailers, refuse_rest: bool) -> None:
        """Write one response (headers, body within the flow-control windows, trailers)."""
        with self.cond:
            try:
                self.conn.send_headers(stream_id, headers, end_stream=not body and not trailers)
                view, pos = memoryview(body), 0
                while pos < len(body):
                    window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                    if window <= 0:
                        self._flush()
                        if not self.open:
                            return
                        self.cond.wait(1.0)
                        continue
                    chunk = bytes(view[pos:pos + window])
                    pos += len(chunk)
                    self.conn.send_data(stream_id, chunk, end_stream=pos == len(body) and not trailers)
                if trailers:
                    self.conn.send_headers(stream_id, trailers, end_stream=True)
                if refuse_rest:  # answered before the client finished sending: stop its upload
                    h2c_frames.refuse_rest(self.conn, stream_id)
            except h2c_frames.StreamGone:
                pass  # the client reset the stream or closed the connection
            self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.open:
            try:
                self.sock.sendall(data)
            except OSError:
                self.open = False


def unframe(stream: _Stream, max_payload: int) -> bytes:
    """The one protobuf message of a unary gRPC request body, or a 4xx error naming the problem."""
    body = stream.body
    if stream.too_large:
        raise PayloadTooLarge(f"the gRPC message is larger than {max_payload} bytes (serving.max_payload_bytes)")
    if len(body) < GRPC_PREFIX:
        raise InvalidInput(f"the gRPC request body holds {len(body)} bytes; a message needs a 5-byte prefix")
    if body[0] not in (0, 1):
        raise InvalidInput(f"the gRPC message's compressed flag is {body[0]}; it must be 0 or 1")
    length = int.from_bytes(body[1:GRPC_PREFIX], "big")
    if length > max_payload:
        raise PayloadTooLarge(f"the gRPC message is {length} bytes; this function takes at most {max_payload} "
                              "(serving.max_payload_bytes)")
    if GRPC_PREFIX + length != len(body):
        raise InvalidInput(f"the gRPC length prefix says {length} bytes but {len(body) - GRPC_PREFIX} follow "
                           "(a unary call sends exactly one message)")
    message = bytes(body[GRPC_PREFIX:])
    return _decompress(message, stream.headers.get("grpc-encoding", "identity"), max_payload) if body[0] else message


def _decompress(message: bytes, encoding: str, max_payload: int) -> bytes:
    """A compressed gRPC message (gzip or deflate), bounded by serving.max_payload_bytes."""
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"the gRPC message is compressed with grpc-encoding {encoding!r}; use gzip, deflate or none")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(message, max_payload + 1)
    except zlib.error as e:
        raise InvalidInput(f"the {encoding} gRPC message cannot be decompressed: {e}") from None
    if len(out) > max_payload:
        raise PayloadTooLarge(f"the gRPC message is more than {max_payload} bytes decompressed (serving.max_payload_bytes)")
    return out


def _headers(pairs: dict) -> HTTPMessage:
    """HTTP/2 header fields as the case-insensitive headers object REST handlers read."""
    msg = HTTPMessage()
    for k, v in pairs.items():
        if not k.startswith(":"):
            msg[k] = v
    return msg
