"""Action containers of the local controller: real Docker containers speaking the OpenWhisk
action protocol (`POST /init` once, then `POST /run` per activation, on port 8080).

A container serves one action revision. `acquire` reuses a warm container with a free
slot (the action's concurrency limit), or starts a new one (a cold start: run, wait for
the port, `/init`). Idle containers are removed after `idle_seconds`. Every container is
labelled `dev.mlfn.local=1` plus the controller's owner id, so a restarted controller
can remove what a crashed one left behind. Logs are read from the container's stdout and
stderr streams up to the `XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX` sentinel line.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone


log = logging.getLogger(__name__)

LABEL = "dev.mlfn.local"
OWNER_LABEL = "dev.mlfn.local.owner"
ACTION_LABEL = "dev.mlfn.local.action"
SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


class InitError(Exception):
    """The container could not be started or initialised (developer error)."""


class PullError(Exception):
    """The image is not available (whisk internal error)."""


@dataclass
class Container:
    key: str  # action key + revision
    obj: object
    url: str
    concurrency: int
    inflight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    session: object = None
    out: list = field(default_factory=list)
    err: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    out_pos: int = 0
    err_pos: int = 0
    sentinels: bool = True  # False once the image was seen not printing sentinels
    dead: bool = False


class Pool:
    def __init__(self, owner: str, idle_seconds: float = 600.0, docker_client=None, apihost: str = ""):
        import docker

        self.docker = docker_client or docker.from_env()
        self.owner = owner
        self.idle_seconds = idle_seconds
        self.apihost = apihost
        self.lock = threading.Lock()
        self.containers: dict = {}  # key -> list[Container]
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="mlfn-local-reaper", daemon=True)
        self._reaper.start()

    # ---- life cycle ----------------------------------------------------------------------------

    def remove_stale(self) -> int:
        """Remove containers a previous controller with the same owner id left behind."""
        n = 0
        for c in self.docker.containers.list(all=True, filters={"label": [f"{LABEL}=1", f"{OWNER_LABEL}={self.owner}"]}):
            try:
                c.remove(force=True)
                n += 1
            except Exception:  # noqa: BLE001 - already gone
                pass
        return n

    def acquire(self, key: str, image: str, memory: int, concurrency: int, init_body: dict,
                timeout_s: float) -> tuple:
        """(container, init_ms or None when warm)."""
        with self.lock:
            for c in self.containers.get(key, []):
                if not c.dead and c.inflight < c.concurrency:
                    c.inflight += 1
                    return c, None
        t0 = time.monotonic()
        c = self._start(key, image, memory, concurrency)
        try:
            self._init(c, init_body, timeout_s)
        except BaseException:
            self.destroy(c)
            raise
        init_ms = int((time.monotonic() - t0) * 1000)
        with self.lock:
            c.inflight += 1
            self.containers.setdefault(key, []).append(c)
        return c, init_ms

    def release(self, c: Container) -> None:
        with self.lock:
            c.inflight = max(0, c.inflight - 1)
            c.last_used = time.monotonic()

    def destroy(self, c: Container) -> None:
        with self.lock:
            c.dead = True
            lst = self.containers.get(c.key, [])
            if c in lst:
                lst.remove(c)
        try:
            c.obj.remove(force=True)
        except Exception:  # noqa: BLE001
            pass

    def evict(self, prefix: str) -> None:
        """Remove every container of an action (all revisions): it was updated or deleted."""
        with self.lock:
            victims = [c for k, lst in self.containers.items() if k.split("@")[0] == prefix for c in lst
                       if c.inflight == 0]
        for c in victims:
            self.destroy(c)

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.containers.values())

    def shutdown(self) -> None:
        self._stop.set()
        with self.lock:
            all_ = [c for lst in self.containers.values() for c in lst]
        if all_:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(8, len(all_))) as ex:  # removal is ~0.3 s each: do it in parallel
                list(ex.map(self.destroy, all_))

    def _reap_loop(self) -> None:
        while not self._stop.wait(min(5.0, max(0.2, self.idle_seconds / 4))):
            now = time.monotonic()
            with self.lock:
                idle = [c for lst in self.containers.values() for c in lst
                        if c.inflight == 0 and now - c.last_used > self.idle_seconds]
            for c in idle:
                log.info("removing idle container %s", c.obj.short_id)
                self.destroy(c)

    # ---- starting and initialising ------------------------------------------------------------

    def _start(self, key: str, image: str, memory: int, concurrency: int) -> Container:
        import docker
        import requests

        kwargs = dict(detach=True, labels={LABEL: "1", OWNER_LABEL: self.owner, ACTION_LABEL: key.split("@")[0]},
                      mem_limit=f"{memory}m", environment={"__OW_API_HOST": self.apihost},
                      extra_hosts={"host.docker.internal": "host-gateway"})
        try:
            obj = self.docker.containers.run(image, **kwargs)
        except docker.errors.ImageNotFound:
            try:
                self.docker.images.pull(image)
            except docker.errors.APIError:
                raise PullError(f"Failed to pull container image '{image}'.") from None
            obj = self.docker.containers.run(image, **kwargs)
        except docker.errors.APIError as e:
            raise InitError(f"Failed to start a container from image '{image}': {e.explanation or e}.") from None
        obj.reload()
        ip = obj.attrs["NetworkSettings"].get("IPAddress")
        if not ip:
            nets = obj.attrs["NetworkSettings"].get("Networks") or {}
            ip = next((n.get("IPAddress") for n in nets.values() if n.get("IPAddress")), None)
        c = Container(key=key, obj=obj, url=f"http://{ip}:8080", concurrency=max(1, concurrency))
        c.session = requests.Session()
        threading.Thread(target=self._read_logs, args=(c,), daemon=True, name=f"logs-{obj.short_id}").start()
        return c

    def _init(self, c: Container, body: dict, timeout_s: float) -> None:
        import requests

        deadline = time.monotonic() + max(10.0, timeout_s)
        while True:
            try:
                r = c.session.post(c.url + "/init", json=body, timeout=max(1.0, deadline - time.monotonic()))
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise InitError("The action container did not start listening on port 8080 in time.") from None
                c.obj.reload()
                if c.obj.status in ("exited", "dead"):
                    tail = c.obj.logs(tail=5).decode(errors="replace").strip()
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

    # ---- logs ----------------------------------------------------------------------------------

    def _read_logs(self, c: Container) -> None:
        buf = {0: b"", 1: b""}
        try:
            stream = c.obj.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            for out, err in stream:
                for i, chunk in ((0, out), (1, err)):
                    if not chunk:
                        continue
                    buf[i] += chunk
                    *lines, buf[i] = buf[i].split(b"\n")
                    if lines:
                        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                        with c.cond:
                            target = c.out if i == 0 else c.err
                            target.extend((stamp, ln.decode(errors="replace")) for ln in lines)
                            c.cond.notify_all()
        except Exception:  # noqa: BLE001 - container removed
            pass

    def collect_logs(self, c: Container, wait_s: float = 1.0, max_bytes: int = 10 * 1024 * 1024) -> list:
        """Lines printed since the last activation, up to the sentinel on stdout and stderr."""
        deadline = time.monotonic() + (wait_s if c.sentinels else 0.05)

        def has(lines, pos):
            return any(text.strip() == SENTINEL for _, text in lines[pos:])

        with c.cond:
            while not (has(c.out, c.out_pos) and has(c.err, c.err_pos)):
                left = deadline - time.monotonic()
                if left <= 0:
                    if c.sentinels:
                        c.sentinels = False
                    break
                c.cond.wait(left)
            result = []
            for name, lines, attr in (("stdout", c.out, "out_pos"), ("stderr", c.err, "err_pos")):
                pos = getattr(c, attr)
                end = pos
                while end < len(lines):
                    if lines[end][1].strip() == SENTINEL:
                        end += 1
                        break
                    result.append((lines[end][0], f"{lines[end][0]} {name}: {lines[end][1]}"))
                    end += 1
                setattr(c, attr, end)
        result.sort(key=lambda x: x[0])
        out, size = [], 0
        for _, line in result:
            size += len(line)
            if size > max_bytes:
                out.append("Logs were truncated because the total bytes size exceeds the limit.")
                break
            out.append(line)
        return out
