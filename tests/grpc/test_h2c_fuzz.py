"""Hostile HTTP/2 and gRPC frames on the one port: each gets an error status or a closed
stream/connection, and the function keeps serving (checked with a real gRPC call after each)."""
from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from .grpc_helpers import call, message

PATH = "/inference.GRPCInferenceService/ModelInfer"


class RawClient:
    """An HTTP/2 client over a plain socket that sends whatever bytes a test gives it."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.events: list = []  # everything received so far
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def start(self, path=PATH, content_type="application/grpc") -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", path),
                                     ("content-type", content_type), ("te", "trailers")])
        return sid

    def send(self, sid: int, data: bytes, end: bool = True):
        pos = 0
        while not self._ended(sid):
            n = min(len(data) - pos, self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n or pos == len(data):
                self.conn.send_data(sid, data[pos:pos + n], end_stream=end and pos + n == len(data))
                pos += n
                self.flush()
            if pos == len(data) or self._ended(sid):
                return
            if not n:
                self.pump()  # wait for a WINDOW_UPDATE (or an early answer)

    def pump(self) -> list:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        events = self.conn.receive_data(data)
        self.events += events
        self.flush()
        return events

    def _ended(self, sid: int) -> bool:
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                   for e in self.events)

    def answer(self, sid: int) -> dict:
        """The stream's response and trailer headers merged, once it ended or was reset."""
        while not self._ended(sid):
            self.pump()
        headers = {}
        for e in self.events:
            if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and e.stream_id == sid:
                headers.update(dict(e.headers))
        return headers


def grpc_frame(payload: bytes, length=None, flag=0) -> bytes:
    return bytes([flag]) + (len(payload) if length is None else length).to_bytes(4, "big") + payload


def still_serving(target: str):
    assert call(target, "ServerLive", message("ServerLiveRequest")).live is True


@pytest.mark.parametrize("body, code, text", [
    (grpc_frame(b"\0" * 10, length=100), "3", "length prefix says 100 bytes but 10 follow"),
    (b"\0\0", "3", "a message needs a 5-byte prefix"),
    (grpc_frame(b"\xff\xff\xff\xff"), "3", "not a valid inference.ModelInferRequest message"),
    (grpc_frame(b"abc", flag=7), "3", "compressed flag is 7"),
    (grpc_frame(b"abc", flag=1), "3", "grpc-encoding 'identity'"),
    (grpc_frame(b"", length=50_000_000), "8", "serving.max_payload_bytes"),
])
def test_bad_grpc_frames_answer_a_status_and_the_function_keeps_serving(server, body, code, text):
    client = RawClient(server[0])
    sid = client.start()
    client.send(sid, body)
    headers = client.answer(sid)
    assert headers["grpc-status"] == code and text in headers["grpc-message"].replace("%27", "'")
    still_serving(server[0])


def test_an_oversized_message_is_answered_before_its_end_and_its_upload_refused(server):
    client = RawClient(server[0])
    sid = client.start()
    client.send(sid, grpc_frame(b"\0" * 2_000_000, length=2_000_000), end=False)  # never ends the stream
    headers = client.answer(sid)
    assert headers["grpc-status"] == "8" and "serving.max_payload_bytes" in headers["grpc-message"]
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid for e in client.events)
    still_serving(server[0])


def test_a_client_that_stops_mid_stream_or_sends_garbage_does_not_stop_the_function(server):
    client = RawClient(server[0])
    sid = client.start()
    client.send(sid, grpc_frame(b"\0" * 1000)[:300], end=False)
    client.sock.close()  # gone mid-message
    sock = socket.create_connection(server[0].rsplit(":", 1), timeout=10)
    # an unknown frame type (ignored, as HTTP/2 says), then a SETTINGS frame of 5 bytes: FRAME_SIZE_ERROR
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\xff\x00garbage-"
                 + b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x00" * 5)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    reader = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    reader.initiate_connection()
    goaways = [e for e in reader.receive_data(received) if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
    sock = socket.create_connection(server[0].rsplit(":", 1), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nXXXXXX")  # a broken preface: closed
    assert sock.recv(65536) == b""
    sock.close()
    still_serving(server[0])


def test_drain_sends_goaway_and_finishes(digits_dir):
    from tests.runtime.conftest import running

    with running(digits_dir) as (url, srv):
        client = RawClient(url.removeprefix("http://"))
        sid = client.start()
        client.send(sid, grpc_frame(message("ModelReadyRequest", name="digits").SerializeToString()), end=True)
        srv.drain()
        events = []
        try:
            while True:
                events += client.pump()
        except (ConnectionError, OSError):
            pass
        assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def test_an_image_without_http2_support_closes_h2c_connections_and_keeps_serving(server, monkeypatch):
    import requests

    from mlfn_runtime import h2c

    monkeypatch.setattr(h2c, "h2c_frames", None)  # as in an image built without serving.grpc
    sock = socket.create_connection(server[0].rsplit(":", 1), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert sock.recv(65536) == b""
    sock.close()
    assert requests.get(f"http://{server[0]}/v2/health/ready", timeout=10).json() == {"ready": True}
