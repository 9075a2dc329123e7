"""The local controller's container pool: which container serves an activation, and how
many containers exist (the containers themselves are in container.py).

- Bounded, as OpenWhisk's invoker is: all containers together fit `memory_budget_mb`
  (each takes its action's memory limit; idle containers of other actions are removed to
  make room), so one action has at most `memory_budget_mb // memory` containers, and a
  container runs at most the action's `concurrency` activations at once.
- Queued: an activation with no free slot waits (first come, first served) for the next
  free slot, or for a container it starts itself. A container is started when the action
  has none, when the queue is not expected to drain through the existing slots within a
  cold start (from the action's measured run and start times, as OpenWhisk's scheduler
  decides), or when an activation has already waited longer than a cold start; at most
  `max_starting` at a time. A wait longer than `queue_wait_s` ends in `PoolBusy`.
- Live: Docker's `die` events drop a container from the pool the moment it exits; an
  activation that cannot connect to its container (it died before the event arrived) is
  retried on another one or a cold start, transparently. A container that dies during
  /run fails that activation only, and is dropped at once.

Every container is labelled `dev.mlfn.local=1` plus the controller's owner id, so a
restarted controller removes what a crashed one left behind. Idle containers are removed
after `idle_seconds`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from mlfn.targets.local.container import (ACTION_LABEL, LABEL, OWNER_LABEL, SENTINEL, ActionContainer,
                                          ActionRuntime, DiedDuringRun, InitError, NotReached, PullError,
                                          RunAnswer, init_container, start_container)

__all__ = ["ACTION_LABEL", "LABEL", "OWNER_LABEL", "SENTINEL", "ActionRuntime", "ContainerInfo", "InitError", "Pool",
           "PoolBusy", "PullError", "RunOutcome"]

log = logging.getLogger(__name__)

RUN_ATTEMPTS = 3  # cold starts tried when the new container is gone before /run reached it
DEFAULT_COLD_MS = 1000.0  # assumed cold start until one was measured
RECHECK_S = 0.1  # a waiting activation reconsiders starting a container this often


class PoolBusy(Exception):
    """No container slot became free within the pool's wait bound."""


@dataclass
class RunOutcome:
    """One activation's run: the /run answer (status None: timed out or died)."""

    answer: RunAnswer
    died: bool  # the container exited during /run
    logs: list
    init_ms: Optional[int]  # None when a warm container served it
    wait_ms: int


@dataclass(frozen=True)
class ContainerInfo:
    docker_id: str
    url: str  # base URL of /init and /run
    inflight: int  # activations running on it


class _Timings:
    """Moving averages of an action's run and cold-start times (ms)."""

    def __init__(self):
        self.run_ms: Optional[float] = None  # None until a run was measured
        self.cold_ms = DEFAULT_COLD_MS
        self.cold_starts = 0

    def add_run(self, ms: float) -> None:
        self.run_ms = ms if self.run_ms is None else 0.8 * self.run_ms + 0.2 * ms

    def add_cold(self, ms: float) -> None:
        self.cold_ms = ms if self.cold_starts == 0 else 0.5 * self.cold_ms + 0.5 * ms
        self.cold_starts += 1


class Pool:
    def __init__(self, owner: str, idle_seconds: float = 600.0, docker_client=None, apihost: str = "",
                 memory_budget_mb: int = 2048, queue_wait_s: float = 60.0, max_starting: Optional[int] = None):
        import docker

        self.docker = docker_client or docker.from_env()
        self.owner = owner
        self.idle_seconds = idle_seconds
        self.apihost = apihost
        self.memory_budget_mb = memory_budget_mb
        self.queue_wait_s = queue_wait_s
        self.max_starting = max_starting or max(2, os.cpu_count() or 2)
        self.cond = threading.Condition()  # guards every field below
        self.containers: dict = {}  # runtime key -> [ActionContainer] (ready ones)
        self.by_id: dict = {}  # docker id -> ActionContainer (ready or starting)
        self.starting: dict = {}  # runtime key -> containers being started
        self.queues: dict = {}  # runtime key -> deque of waiting activations' tickets
        self.timings: dict = {}  # runtime key -> _Timings
        self.memory_used_mb = 0
        self.started = 0  # containers started since the pool was created
        self._stop = threading.Event()
        self._remover = ThreadPoolExecutor(4, thread_name_prefix="mlfn-local-rm")
        self._events = None
        for target, name in ((self._watch_deaths, "mlfn-local-deaths"), (self._reap_loop, "mlfn-local-reaper")):
            threading.Thread(target=target, name=name, daemon=True).start()

    # ---- one activation ------------------------------------------------------------------------

    def run(self, runtime: ActionRuntime, body: dict) -> RunOutcome:
        """Run one activation on a container of `runtime` (warm, or started for it).

        Raises PoolBusy, InitError (start or /init failed) or PullError."""
        t0 = time.monotonic()
        deadline = t0 + self.queue_wait_s
        cold_attempts = 0
        while cold_attempts < RUN_ATTEMPTS:  # a warm container found dead leaves the pool: no endless loop
            c, init_ms = self._acquire(runtime, deadline)
            cold_attempts += init_ms is not None
            wait_ms = int((time.monotonic() - t0) * 1000) - (init_ms or 0)
            try:
                answer = c.run(body)
            except NotReached:
                log.info("container %s was gone before /run; trying another", c.docker_obj.short_id)
                self._drop(c)
                continue
            except DiedDuringRun:
                self._drop(c)
                now = int(time.time() * 1000)
                return RunOutcome(RunAnswer(None, b"", now, now), True, c.collect_logs(0.0), init_ms, max(0, wait_ms))
            except BaseException:
                self._release(c, None)  # a bug on this side: keep the container, free the slot
                raise
            broken = answer.status in (None, 503)  # timed out, or the runtime says it cannot serve
            logs = c.collect_logs(0.0 if broken else 1.0)
            if broken:
                self._drop(c)
            else:
                self._release(c, answer.end_ms - answer.start_ms)
            return RunOutcome(answer, False, logs, init_ms, max(0, wait_ms))
        raise InitError(f"The action's container exited before /run, {RUN_ATTEMPTS} times in a row.")

    def _acquire(self, runtime: ActionRuntime, deadline: float) -> tuple:
        """(container with a slot taken, init ms or None when warm)."""
        with self.cond:
            c = self._slot_or_start_permit(runtime, deadline)
        if c is not None:
            return c, None
        t0 = time.monotonic()
        c = None
        try:
            c = start_container(self.docker, runtime, self.owner, self.apihost)
            with self.cond:
                self.by_id[c.id] = c
                self.started += 1
            init_container(c)
        except BaseException:
            with self.cond:
                self.starting[runtime.key] -= 1
                self.memory_used_mb -= runtime.memory_mb
                self.cond.notify_all()
            if c is not None:
                self._drop(c)
            raise
        init_ms = int((time.monotonic() - t0) * 1000)
        with self.cond:
            self.starting[runtime.key] -= 1
            self.timings.setdefault(runtime.key, _Timings()).add_cold(init_ms)
            c.inflight = 1
            if not c.dead:
                self.containers.setdefault(runtime.key, []).append(c)
            else:
                self.memory_used_mb -= runtime.memory_mb
            self.cond.notify_all()
        return c, init_ms

    def _slot_or_start_permit(self, runtime: ActionRuntime, deadline: float) -> Optional[ActionContainer]:
        """Under the lock: a container with a slot taken, or None with a start reserved."""
        key = runtime.key
        queue = self.queues.setdefault(key, deque())
        ticket = object()
        queue.append(ticket)
        since = time.monotonic()
        try:
            while True:
                if queue[0] is ticket:
                    c = next((c for c in self.containers.get(key, []) if c.inflight < runtime.concurrency), None)
                    if c is not None:
                        c.inflight += 1
                        return c
                if self._may_start(runtime, len(queue), (time.monotonic() - since) * 1000):
                    self.starting[key] = self.starting.get(key, 0) + 1
                    self.memory_used_mb += runtime.memory_mb
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolBusy(self._busy_message(runtime))
                self.cond.wait(min(left, RECHECK_S))
        finally:
            queue.remove(ticket)
            if not queue:
                del self.queues[key]
            self.cond.notify_all()

    def _may_start(self, runtime: ActionRuntime, waiting: int, waited_ms: float) -> bool:
        """Under the lock: whether a waiting activation should start a container now."""
        key = runtime.key
        ready, starting = len(self.containers.get(key, [])), self.starting.get(key, 0)
        if ready + starting >= self.bound(runtime) or sum(self.starting.values()) >= self.max_starting:
            return False
        if waiting <= starting * (runtime.concurrency - 1):
            return False  # the containers already starting have a slot for each waiting activation
        timings = self.timings.get(key) or _Timings()
        if ready or starting:
            if timings.run_ms is not None:
                drain_ms = waiting / ((ready + starting) * runtime.concurrency) * timings.run_ms
                if drain_ms < timings.cold_ms and (starting or waited_ms < timings.cold_ms):
                    return False  # the queue drains through the slots there are sooner than a cold start
            elif starting or waited_ms < timings.cold_ms:
                return False  # the first container measures the run time before more are started
        return self._make_room(runtime)

    def bound(self, runtime: ActionRuntime) -> int:
        """The most containers one action may have."""
        return max(1, self.memory_budget_mb // max(1, runtime.memory_mb))

    def _make_room(self, runtime: ActionRuntime) -> bool:
        """Under the lock: free memory for a new container by removing idle containers of other
        actions (least recently used first)."""
        memory_mb = runtime.memory_mb
        if self.memory_used_mb + memory_mb <= self.memory_budget_mb:
            return True
        idle = sorted((c for key, lst in self.containers.items() if key != runtime.key for c in lst
                       if c.inflight == 0), key=lambda c: c.last_used)
        for c in idle:
            self._forget(c)
            self._remove_later(c)
            if self.memory_used_mb + memory_mb <= self.memory_budget_mb:
                return True
        return False

    def _busy_message(self, runtime: ActionRuntime) -> str:
        name = runtime.key.split("@")[0]
        return (f"No container of action '{name}' became free within {self.queue_wait_s:g} s "
                f"({len(self.containers.get(runtime.key, []))} running, at most {self.bound(runtime)} for its "
                f"{runtime.memory_mb} MB in a {self.memory_budget_mb} MB pool, {runtime.concurrency} activation(s) "
                "each); try again later or raise the action's concurrency limit.")

    def _release(self, c: ActionContainer, run_ms: Optional[float]) -> None:
        with self.cond:
            c.inflight = max(0, c.inflight - 1)
            c.last_used = time.monotonic()
            if run_ms is not None:
                self.timings.setdefault(c.runtime.key, _Timings()).add_run(run_ms)
            retired = c.dead
            self.cond.notify_all()
        if retired:  # evicted or died while running: nobody else will use it
            self._remove_later(c)

    # ---- dropping containers -------------------------------------------------------------------

    def _forget(self, c: ActionContainer) -> None:
        """Under the lock: no activation gets `c` any more; its memory is free."""
        lst = self.containers.get(c.runtime.key, [])
        if c in lst:
            lst.remove(c)
            self.memory_used_mb -= c.runtime.memory_mb
            if not lst:
                del self.containers[c.runtime.key]
        c.dead = True
        self.by_id.pop(c.id, None)
        self.cond.notify_all()

    def _drop(self, c: ActionContainer) -> None:
        """Forget `c` now and remove its Docker container in the background."""
        with self.cond:
            self._forget(c)
        self._remove_later(c)

    def _remove_later(self, c: ActionContainer) -> None:
        try:
            self._remover.submit(self._remove, c)
        except RuntimeError:  # the pool was shut down
            self._remove(c)

    @staticmethod
    def _remove(c: ActionContainer) -> None:
        c.close_connections()
        try:
            c.docker_obj.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def evict(self, prefix: str) -> None:
        """Retire every container of an action (all revisions): it was updated or deleted.
        Idle ones are removed now, busy ones when their activation ends."""
        with self.cond:
            victims = [c for k, lst in self.containers.items() if k.split("@")[0] == prefix for c in lst]
            for c in victims:
                self._forget(c)
            self.timings = {k: t for k, t in self.timings.items() if k.split("@")[0] != prefix}
        for c in victims:
            if c.inflight == 0:
                self._remove_later(c)

    def _watch_deaths(self) -> None:
        """Drop a container from the pool as soon as Docker reports that it exited."""
        filters = {"type": "container", "event": ["die"], "label": [f"{OWNER_LABEL}={self.owner}"]}
        while not self._stop.is_set():
            try:
                self._events = self.docker.events(decode=True, filters=filters)
                for event in self._events:
                    with self.cond:
                        c = self.by_id.get(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
                        if c is not None:
                            log.info("container %s exited; dropped from the pool", c.docker_obj.short_id)
                            self._forget(c)
                    if c is not None and c.inflight == 0:
                        self._remove_later(c)
            except Exception:  # noqa: BLE001 - Docker restarted or the stream was closed
                pass
            self._stop.wait(1.0)

    def _reap_loop(self) -> None:
        while not self._stop.wait(min(5.0, max(0.2, self.idle_seconds / 4))):
            now = time.monotonic()
            with self.cond:
                idle = [c for lst in self.containers.values() for c in lst
                        if c.inflight == 0 and now - c.last_used > self.idle_seconds]
            for c in idle:
                log.info("removing idle container %s", c.docker_obj.short_id)
                self._drop(c)

    # ---- life cycle and inspection -------------------------------------------------------------

    def remove_stale(self) -> int:
        """Remove containers a previous controller with the same owner id left behind."""
        n = 0
        labels = {"label": [f"{LABEL}=1", f"{OWNER_LABEL}={self.owner}"]}
        for c in self.docker.containers.list(all=True, sparse=True, filters=labels):
            try:
                c.remove(force=True)
                n += 1
            except Exception:  # noqa: BLE001 - already gone
                pass
        return n

    def count(self) -> int:
        with self.cond:
            return sum(len(v) for v in self.containers.values())

    def ready(self, action_key: str) -> list:
        """The ready containers of an action (all revisions), as ContainerInfo."""
        with self.cond:
            return [ContainerInfo(c.id, c.url, c.inflight) for k, lst in self.containers.items()
                    if k.split("@")[0] == action_key for c in lst]

    def shutdown(self) -> None:
        self._stop.set()
        try:
            if self._events is not None:
                self._events.close()
        except Exception:  # noqa: BLE001 - the stream is already closed
            pass
        with self.cond:
            all_ = [c for lst in self.containers.values() for c in lst]
            for c in all_:
                self._forget(c)
        for c in all_:  # removal is ~0.3 s each: in parallel
            self._remove_later(c)
        self._remover.shutdown(wait=True)
