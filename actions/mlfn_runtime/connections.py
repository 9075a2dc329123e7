"""Every connection has a deadline, and there are at most `serving.max_connections`.

- `DeadlineReader` is the raw reader under a connection's `rfile`: each socket read waits
  at most until its `deadline` (a socket timeout is per read, so a client sending one byte
  a second would evade it; a deadline per phase does not). The handler sets the deadline
  per phase: idle (waiting for a keep-alive request), header, body (see http_server).
- `Connections` counts and tracks open connections: `admit()` in the accepting thread
  (False beyond the cap), `release()` when a connection's thread ends; `drain(seconds)`
  closes idle keep-alive connections, waits up to `seconds` for the busy ones, then shuts
  the sockets of what remains so their threads end.
- `Refuser`: one thread answering connections beyond the cap with 503 + Connection: close
  (a bounded queue; when it is full, excess connections are just closed).
"""
from __future__ import annotations

import collections
import io
import queue
import socket
import threading
import time
from typing import Optional

from mlfn_runtime.runtime_log import log


class DeadlineReader(io.RawIOBase):
    """Reads `sock`; every read raises TimeoutError once `deadline` (time.monotonic) passed."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock
        self.deadline: Optional[float] = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is None:
            self.sock.settimeout(None)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the read deadline passed")
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class Connections:
    """Open connections: a count bounded by `cap`, and the handlers with their idle state."""

    def __init__(self, cap: int):
        self.cap = cap
        self.count = 0
        self.handlers: dict = {}  # handler -> idle (waiting for a request)
        self.draining = False
        self._changed = threading.Condition()

    def admit(self) -> bool:
        with self._changed:
            if self.count >= self.cap:
                return False
            self.count += 1
            return True

    def release(self) -> None:
        with self._changed:
            self.count -= 1
            self._changed.notify_all()

    def track(self, handler, idle: bool) -> None:
        # twice per request: a dict store is atomic under the GIL, so no lock here; drain()
        # copies the dict in one C call (list(...)) before it looks at it
        self.handlers[handler] = idle
        if idle and self.draining:
            _shutdown(handler.connection, socket.SHUT_RD)

    def untrack(self, handler) -> None:
        self.handlers.pop(handler, None)

    def drain(self, seconds: float) -> int:
        """Close idle connections, wait up to `seconds` for busy ones to finish, then shut
        the rest down; returns how many had to be cut off."""
        self.draining = True
        idle = [h for h, is_idle in list(self.handlers.items()) if is_idle]
        for h in idle:
            _shutdown(h.connection, socket.SHUT_RD)
        end = time.monotonic() + seconds
        with self._changed:
            while self.count and time.monotonic() < end:
                self._changed.wait(min(0.1, max(0.0, end - time.monotonic())))
            stuck = list(self.handlers)
        if stuck:
            log(f"drain deadline ({seconds:g} s) passed; closing {len(stuck)} connection(s) still open")
            for h in stuck:
                _shutdown(h.connection, socket.SHUT_RDWR)
            with self._changed:  # their threads end once their reads fail (a moment)
                self._changed.wait_for(lambda: not self.count, timeout=1.0)
        return len(stuck)


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


LINGER_SECONDS = 0.5  # a refused connection stays half-closed this long, for the client to read the 503
LINGER_MAX = 256
STOP = object()


class Refuser:
    """Answers connections beyond the cap with 503 from one thread, never blocking accept."""

    def __init__(self, body: bytes, backlog: int = 64):
        self.response = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        self.waiting: "queue.Queue" = queue.Queue(backlog)
        self.refused = 0
        threading.Thread(target=self._loop, name="mlfn-refuser", daemon=True).start()

    def close(self) -> None:
        """End the thread (closing what it still holds)."""
        while True:
            try:
                self.waiting.put_nowait(STOP)
                return
            except queue.Full:
                try:
                    _close(self.waiting.get_nowait())
                except queue.Empty:
                    pass

    def refuse(self, sock: socket.socket) -> None:
        self.refused += 1
        try:
            self.waiting.put_nowait(sock)
        except queue.Full:
            _close(sock)

    def _loop(self) -> None:
        lingering: "collections.deque" = collections.deque()  # (close at, socket): answered, closing
        while True:
            try:
                sock = self.waiting.get(timeout=0.1)
            except queue.Empty:
                sock = None
            if sock is STOP:
                for _, lingered in lingering:
                    _close(lingered)
                return
            now = time.monotonic()
            while lingering and (lingering[0][0] <= now or len(lingering) > LINGER_MAX):
                _close(lingering.popleft()[1])
            if sock is not None and self._answer(sock):
                lingering.append((now + LINGER_SECONDS, sock))

    def _answer(self, sock: socket.socket) -> bool:
        """Read what the client sent (so closing does not reset the connection before it
        reads the answer), send the 503 and half-close; False when the client is gone."""
        try:
            sock.settimeout(0.05)
            try:
                sock.recv(65536)
            except OSError:
                pass
            sock.sendall(self.response)
            sock.shutdown(socket.SHUT_WR)
            return True
        except OSError:
            _close(sock)
            return False


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
