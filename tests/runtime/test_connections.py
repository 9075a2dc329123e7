"""Slow and idle clients (issue 11, item 4): every phase of a connection has a deadline
(headers, body, keep-alive idle), connections are capped with a polite 503, and the
server keeps serving throughout. Short deadlines via MLFN_SERVING_* settings, loopback only."""
import json
import socket
import time

import pytest
import requests

from .conftest import running

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def short_deadlines(monkeypatch):
    for key, value in {"HEADER_TIMEOUT_SECONDS": "0.5", "BODY_TIMEOUT_SECONDS": "0.5",
                       "IDLE_TIMEOUT_SECONDS": "0.5"}.items():
        monkeypatch.setenv("MLFN_SERVING_" + key, value)


def connect(url: str) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(s: socket.socket, limit: float = 5.0) -> tuple:
    """(everything the server sent until it closed, seconds it took); fails after `limit`."""
    t0 = time.monotonic()
    out = b""
    s.settimeout(limit)
    while True:
        piece = s.recv(65536)
        if not piece:
            return out, time.monotonic() - t0
        out += piece


def read_response(s: socket.socket) -> bytes:
    """One whole response (headers and Content-Length body) from a keep-alive connection."""
    out = b""
    while b"\r\n\r\n" not in out:
        out += _recv(s)
    head, _, body = out.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += _recv(s)
    return head + b"\r\n\r\n" + body


def _recv(s: socket.socket) -> bytes:
    piece = s.recv(65536)
    assert piece, "the server closed the connection"
    return piece


def wait_for(condition, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_partial_headers_are_cut_off_at_the_header_deadline_even_when_trickled(digits_dir, short_deadlines):
    with running(digits_dir) as (url, srv):
        quiet = connect(url)
        quiet.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        trickle = connect(url)
        t0 = time.monotonic()
        closed_after = None
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 60:  # 1 byte / 50 ms: each read is quick
            if _readable(trickle):  # the server closed (EOF) or answered
                closed_after = time.monotonic() - t0
                break
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - t0
                break
            time.sleep(0.05)
        assert closed_after is not None and closed_after < 1.5  # a per-read timeout would never fire
        assert read_until_closed(trickle)[0] == b""
        assert read_until_closed(quiet)[1] < 2.5
        wait_for(lambda: srv.connections.count == 0)
        assert requests.get(url + "/healthz", timeout=5).status_code == 200


def _readable(s: socket.socket) -> bool:
    import select

    return bool(select.select([s], [], [], 0)[0])


@pytest.mark.parametrize("head,body", [
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
     b'{"image": "'),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"40\r\n{\"image\": "),
], ids=["content-length-larger-than-sent", "short-chunk"])
def test_a_body_that_stops_short_is_408_at_the_body_deadline(digits_dir, short_deadlines, head, body):
    with running(digits_dir) as (url, srv):
        s = connect(url)
        s.sendall(head + body)
        out, took = read_until_closed(s)
        head_out, _, payload = out.partition(b"\r\n\r\n")
        assert head_out.startswith(b"HTTP/1.1 408") and b"Connection: close" in head_out
        assert json.loads(payload) == {"error": "the request body did not arrive within 0.5 s "
                                                "(serving.body_timeout_seconds)"}
        assert 0.4 < took < 2.5
        wait_for(lambda: srv.connections.count == 0)
        assert requests.get(url + "/healthz", timeout=5).status_code == 200


def test_a_body_cut_short_by_the_client_is_400_not_a_truncated_request(digits_dir):
    with running(digits_dir) as (url, _):
        s = connect(url)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\": [1]}")
        s.shutdown(socket.SHUT_WR)
        out, _ = read_until_closed(s)
        assert out.startswith(b"HTTP/1.1 400") and b"ended after 15 of its 100 bytes" in out


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_deadline(digits_dir, short_deadlines):
    with running(digits_dir) as (url, srv):
        s = connect(url)
        s.sendall(HEALTH)
        assert read_response(s).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
        s.sendall(HEALTH)  # keep-alive works within the deadline
        assert read_response(s).startswith(b"HTTP/1.1 200")
        _, took = read_until_closed(s)
        assert 0.4 < took < 2.5
        wait_for(lambda: srv.connections.count == 0)


def test_connections_beyond_the_cap_get_503_and_others_succeed_once_slots_free(digits_dir, monkeypatch):
    monkeypatch.setenv("MLFN_SERVING_MAX_CONNECTIONS", "4")
    with running(digits_dir) as (url, srv):
        held = [connect(url) for _ in range(4)]
        wait_for(lambda: srv.connections.count == 4)
        extra = connect(url)
        extra.sendall(HEALTH)
        out, _ = read_until_closed(extra)
        head, _, payload = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"Connection: close" in head and b"Retry-After: 1" in head
        assert json.loads(payload)["error"] == ("the function is serving its maximum of 4 connections "
                                                "(serving.max_connections); retry shortly")
        assert srv.refuser.refused >= 1
        held.pop().close()
        wait_for(lambda: srv.connections.count == 3)
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
        for s in held:
            s.sendall(HEALTH)  # the held connections were never disturbed
            assert read_response(s).startswith(b"HTTP/1.1 200")
            s.close()
