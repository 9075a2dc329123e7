"""One action container of the local controller: a real Docker container speaking the
OpenWhisk action protocol (`POST /init` once, then `POST /run` per activation, on port 8080).

`start_container` runs it and `init_container` initialises it (a cold start);
`ActionContainer.run` posts one activation over a kept-alive connection (plain
http.client: requests' per-call overhead was most of the controller's warm cost);
`ActionContainer.collect_logs` returns what it printed up to the
`XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX` sentinel line on stdout and stderr. Scheduling
(which container serves which activation, how many exist) is the pool's job (pool.py).
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

LABEL = "dev.mlfn.local"
OWNER_LABEL = "dev.mlfn.local.owner"
ACTION_LABEL = "dev.mlfn.local.action"
SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
CONNECT_TIMEOUT_S = 0.5  # a live container accepts in well under a millisecond on the bridge
MAX_CONNECTION_IDLE_S = 2.0  # kept-alive /run connections idle longer are not reused (well below
# any idle timeout of the function's server, so a reused connection is never closed under a request)


class InitError(Exception):
    """The container could not be started or initialised (developer error)."""


class PullError(Exception):
    """The image is not available (whisk internal error)."""


class NotReached(Exception):
    """/run could not connect: the activation never reached the container."""


class DiedDuringRun(Exception):
    """The container accepted /run, then closed the connection without an answer."""


@dataclass(frozen=True)
class ActionRuntime:
    """What a container of one action revision needs; `key` is "action key@revision"."""

    key: str
    image: str
    memory_mb: int
    concurrency: int
    init_body: dict
    timeout_s: float
    log_limit_bytes: int


@dataclass
class RunAnswer:
    """The HTTP answer of /run (status None when it timed out)."""

    status: Optional[int]
    content: bytes
    start_ms: int
    end_ms: int


@dataclass(eq=False)
class ActionContainer:
    runtime: ActionRuntime
    docker_obj: object
    url: str
    session: object  # requests.Session for /init
    inflight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    dead: bool = False
    sentinels: bool = True  # False once the image was seen not printing sentinels
    out: list = field(default_factory=list)
    err: list = field(default_factory=list)
    out_pos: int = 0
    err_pos: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)  # guards logs and connections
    idle_connections: list = field(default_factory=list)  # [(monotonic time, HTTPConnection)] for /run

    @property
    def id(self) -> str:
        return self.docker_obj.id

    def run(self, body: dict) -> RunAnswer:
        """POST /run with the action's time limit; the body gets OpenWhisk's `deadline`.

        Raises NotReached when no connection could be made, DiedDuringRun when the
        connection broke before an answer; a timeout answers with status None."""
        start = int(time.time() * 1000)
        data = json.dumps({**body, "deadline": str(start + int(self.runtime.timeout_s * 1000))}).encode()
        conn = self._connection()
        try:
            conn.request("POST", "/run", body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            content = response.read()
        except socket.timeout:
            conn.close()
            return RunAnswer(None, b"", start, int(time.time() * 1000))
        except (OSError, http.client.HTTPException):
            conn.close()
            raise DiedDuringRun() from None
        if response.will_close:
            conn.close()
        else:
            with self.cond:
                self.idle_connections.append((time.monotonic(), conn))
        return RunAnswer(response.status, content, start, int(time.time() * 1000))

    def close_connections(self) -> None:
        with self.cond:
            idle, self.idle_connections = self.idle_connections, []
        for _, conn in idle:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        """A kept-alive connection still open at both ends, or a new one (NotReached if none)."""
        while True:
            with self.cond:
                if not self.idle_connections:
                    break
                since, conn = self.idle_connections.pop()
            if time.monotonic() - since < MAX_CONNECTION_IDLE_S and not _peer_closed(conn):
                return conn
            conn.close()
        host, port = self.url.rsplit("/", 1)[-1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
        except OSError:  # refused, unreachable or timed out: nothing was sent
            conn.close()
            raise NotReached() from None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.settimeout(self.runtime.timeout_s)
        return conn

    def collect_logs(self, wait_s: float) -> list:
        """Lines printed since the last activation, up to the sentinel on stdout and stderr."""
        deadline = time.monotonic() + (wait_s if self.sentinels else 0.0)
        with self.cond:
            while not (_has_sentinel(self.out, self.out_pos) and _has_sentinel(self.err, self.err_pos)):
                left = deadline - time.monotonic()
                if left <= 0:
                    if wait_s > 0:  # waited in vain: this image prints no sentinels
                        self.sentinels = False
                    break
                self.cond.wait(left)
            result = []
            for name, lines, attr in (("stdout", self.out, "out_pos"), ("stderr", self.err, "err_pos")):
                end = getattr(self, attr)
                while end < len(lines):
                    stamp, text = lines[end]
                    end += 1
                    if text.strip() == SENTINEL:
                        break
                    result.append((stamp, f"{stamp} {name}: {text}"))
                setattr(self, attr, end)
        result.sort(key=lambda x: x[0])
        out, size = [], 0
        for _, line in result:
            size += len(line)
            if size > self.runtime.log_limit_bytes:
                out.append("Logs were truncated because the total bytes size exceeds the limit.")
                break
            out.append(line)
        return out

    def read_logs(self) -> None:
        """Follow the container's stdout and stderr (a thread per container) until it is gone."""
        buf = {0: b"", 1: b""}
        try:
            stream = self.docker_obj.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            for chunks in stream:
                for i, chunk in enumerate(chunks):
                    if not chunk:
                        continue
                    buf[i] += chunk
                    *lines, buf[i] = buf[i].split(b"\n")
                    if lines:
                        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                        with self.cond:
                            (self.out if i == 0 else self.err).extend(
                                (stamp, ln.decode(errors="replace")) for ln in lines)
                            self.cond.notify_all()
        except Exception:  # noqa: BLE001 - the container was removed
            pass


def _has_sentinel(lines: list, pos: int) -> bool:
    return any(text.strip() == SENTINEL for _, text in lines[pos:])


def _peer_closed(conn: http.client.HTTPConnection) -> bool:
    """True when a kept-alive connection was closed by the container (or has stray data)."""
    if conn.sock is None:
        return True
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def start_container(docker_client, runtime: ActionRuntime, owner: str, apihost: str) -> ActionContainer:
    """Run a container for `runtime` (pulling the image when missing); not yet initialised."""
    import docker
    import requests

    kwargs = dict(detach=True, labels={LABEL: "1", OWNER_LABEL: owner, ACTION_LABEL: runtime.key.split("@")[0]},
                  mem_limit=f"{runtime.memory_mb}m", environment={"__OW_API_HOST": apihost},
                  extra_hosts={"host.docker.internal": "host-gateway"})
    try:
        obj = docker_client.containers.run(runtime.image, **kwargs)
    except docker.errors.ImageNotFound:
        try:
            docker_client.images.pull(runtime.image)
        except docker.errors.APIError:
            raise PullError(f"Failed to pull container image '{runtime.image}'.") from None
        obj = docker_client.containers.run(runtime.image, **kwargs)
    except docker.errors.APIError as e:
        raise InitError(f"Failed to start a container from image '{runtime.image}': {e.explanation or e}.") from None
    obj.reload()
    nets = obj.attrs["NetworkSettings"].get("Networks") or {}
    ip = obj.attrs["NetworkSettings"].get("IPAddress") or next(
        (n.get("IPAddress") for n in nets.values() if n.get("IPAddress")), None)
    c = ActionContainer(runtime=runtime, docker_obj=obj, url=f"http://{ip}:8080", session=requests.Session())
    threading.Thread(target=c.read_logs, daemon=True, name=f"logs-{obj.short_id}").start()
    return c


def init_container(c: ActionContainer) -> None:
    """POST /init, retrying the connection until the container listens (or exits)."""
    import requests

    deadline = time.monotonic() + max(10.0, c.runtime.timeout_s)
    while True:
        try:
            r = c.session.post(c.url + "/init", json=c.runtime.init_body,
                               timeout=max(1.0, deadline - time.monotonic()))
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise InitError("The action container did not start listening on port 8080 in time.") from None
            c.docker_obj.reload()
            if c.docker_obj.status in ("exited", "dead"):
                tail = c.docker_obj.logs(tail=5).decode(errors="replace").strip()
                raise InitError(f"The action container exited during start-up: {tail[-300:]}") from None
            time.sleep(0.02)
        except requests.Timeout:
            raise InitError("The action container did not answer /init in time.") from None
    if r.status_code != 200:
        try:
            msg = r.json().get("error") or r.text
        except ValueError:
            msg = r.text
        raise InitError(f"The action failed to initialize: {msg}")
