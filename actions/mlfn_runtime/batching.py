"""Server-side adaptive batching (`serving.batching`): concurrent requests for one model
share one interpreter call, as TF Serving's batching, Triton's dynamic batcher and
MLServer's adaptive batching do.

    batcher = Batcher(runner, BatchSettings(enabled=True, max_batch_size=32, max_latency_ms=2), max_requests=8,
                      in_flight=function_in_flight)
    outputs = batcher.predict(inputs)   # what runner.predict(inputs) returns, for these rows only

Where it sits: `Function.predict` and `Function.infer` call `ModelEntry.batcher.predict`
where they called the runner, after the request was decoded, pre-processed and validated
in its own thread. Every protocol (/run, /predict, CloudEvents, Kafka batches, OIP REST and
gRPC, TF Serving REST) goes through it, and none of them knows about it. Switched off
(`enabled: false`), `predict` is `runner.predict`.

How a batch forms (leader and followers, no thread of its own):
- A request joins the open group of its *stack key* (per input: name, shape after the
  batch dimension, dtype) when the group has room for its rows (`max_batch_size` rows per
  call); otherwise it opens a new group and leads it. Inputs that cannot be stacked
  (another trailing shape or dtype) have another key, so they go in another group.
- The leader waits only while another request may still join: it flushes at once when
  every request in flight in the server (admitted, not yet answered: `RequestsInFlight`,
  the `mlfn_inflight_requests` gauge) is already inside a batcher, or as many are as there
  are worker slots (`max_requests`, serving.workers: each holds its slot while it waits).
  Otherwise it waits until its group holds `max_batch_size` rows, or `max_latency_ms`
  passed since it opened the group, or those others arrived or were answered. So a lone
  request does not wait at all; requests arriving together (decoded and pre-processed in
  their own threads) wait at most the window for each other. Then the leader waits until
  an interpreter is free (a semaphore of the runner's `max_concurrent_invokes`). The group
  takes joiners all that time: under load a batch grows while the interpreters are busy.
  With `max_latency_ms: 0` only that queueing coalesces. (Called outside a server, with
  no request admitted, every call runs at once.)
- The leader closes the group, concatenates the members' arrays along the batch
  dimension, calls `runner.predict` once, and hands each member its rows of every output.
- A request with more rows than `max_batch_size` runs alone (through the same semaphore).

Errors stay per request: decoding and validation run before a request is queued, so a
bad input is answered 4xx from its own thread and never joins a group. If the shared call
still fails (e.g. a custom pre-processing step produced a NaN, which the interpreter
refuses), or an output's first dimension is not the batch (it cannot be split), the
leader runs each member alone: only the culprit fails, with its own error.

Limits: a request keeps its worker slot (`serving.workers`) while it waits, so a group
holds at most that many requests; the waiting happens in request threads, so a SIGTERM
drain waits for batched requests as for any other, and request metrics stay per request.
`/metrics` adds, per model, `mlfn_batch_rows` (a histogram of rows per interpreter call:
its `_count` is the calls), `mlfn_batch_requests_total` (requests answered by those calls)
and `mlfn_batch_retries_total` (shared calls that failed and ran request by request).
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from mlfn_runtime.errors import ConfigurationError
from mlfn_runtime.in_flight import RequestsInFlight
from mlfn_runtime.metrics import label_set
from mlfn_runtime.slots import WorkerSlots

ENV_PREFIX = "MLFN_SERVING_BATCHING_"
MAX_LATENCY_MS = 1000.0
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class BatchSettings:
    """`serving.batching` of function.json. `max_batch_size` is rows per coalesced
    interpreter call, not `serving.max_batch_size` (inputs one request may carry)."""

    enabled: bool = True  # the build side's default too (mlfn.config.BatchingConfig): function.json omits it
    max_batch_size: int = 32
    max_latency_ms: float = 2.0

    @classmethod
    def from_dict(cls, data: Optional[dict], environ: Mapping, source: str) -> "BatchSettings":
        """`data` (None: the defaults) read from the file `source`, overridden by
        MLFN_SERVING_BATCHING_<KEY> variables; a wrong value is a ConfigurationError naming
        the key and where it came from. Unknown keys are ignored (a newer build side may add some)."""
        if data is not None and not isinstance(data, dict):
            raise ConfigurationError(f"serving.batching in {source} must be a mapping of enabled, max_batch_size "
                                     "and max_latency_ms.")
        values, where = {}, {}
        for key in ("enabled", "max_batch_size", "max_latency_ms"):
            var = ENV_PREFIX + key.upper()
            if environ.get(var):
                values[key], where[key] = _from_env(var, environ[var], key == "enabled"), f"({var})"
            elif key in (data or {}):
                values[key], where[key] = data[key], f"in {source}"
        enabled = values.get("enabled", cls.enabled)
        if not isinstance(enabled, bool):
            raise ConfigurationError(f"serving.batching.enabled {where['enabled']} must be true or false, "
                                     f"not {enabled!r}.")
        size = values.get("max_batch_size", cls.max_batch_size)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"serving.batching.max_batch_size {where['max_batch_size']} (rows per "
                                     f"interpreter call) must be a positive integer, not {size!r}.")
        latency = values.get("max_latency_ms", cls.max_latency_ms)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency <= MAX_LATENCY_MS:
            raise ConfigurationError(f"serving.batching.max_latency_ms {where['max_latency_ms']} must be a number "
                                     f"of milliseconds from 0 to {MAX_LATENCY_MS:g}, not {latency!r}.")
        return cls(enabled=enabled, max_batch_size=size, max_latency_ms=float(latency))


def _from_env(name: str, text: str, flag: bool):
    """An environment value as a bool (`flag`) or a number (checked by from_dict)."""
    low = text.strip().lower()
    if flag:
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigurationError(f"{name} must be true or false, not {text!r}.")
    for kind in (int, float):
        try:
            return kind(low)
        except ValueError:
            continue
    raise ConfigurationError(f"{name} must be a number, not {text!r}.")


class BatchStats:
    """Rows per interpreter call (a histogram), requests answered, shared calls retried."""

    def __init__(self):
        self._lock = threading.Lock()
        self.row_counts = [0] * (len(ROW_BUCKETS) + 1)  # the last: above every bucket
        self.rows = 0
        self.calls = 0
        self.requests = 0
        self.retries = 0

    def count_call(self, rows: int, requests: int) -> None:
        with self._lock:
            self.row_counts[bisect_left(ROW_BUCKETS, rows)] += 1
            self.rows += rows
            self.calls += 1
            self.requests += requests

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def render(self, model: str, base: list) -> dict:
        """{metric name: its Prometheus sample lines for `model`}."""
        with self._lock:
            counts, rows, calls = list(self.row_counts), self.rows, self.calls
            requests, retries = self.requests, self.retries
        lab = base + [("model", model)]
        hist, acc = [], 0
        for le, n in zip(ROW_BUCKETS, counts):
            acc += n
            hist.append(f"mlfn_batch_rows_bucket{label_set(lab + [('le', str(le))])} {acc}")
        hist += [f"mlfn_batch_rows_bucket{label_set(lab + [('le', '+Inf')])} {calls}",
                 f"mlfn_batch_rows_sum{label_set(lab)} {rows}", f"mlfn_batch_rows_count{label_set(lab)} {calls}"]
        return {"mlfn_batch_rows": hist,
                "mlfn_batch_requests_total": [f"mlfn_batch_requests_total{label_set(lab)} {requests}"],
                "mlfn_batch_retries_total": [f"mlfn_batch_retries_total{label_set(lab)} {retries}"]}


class _Request:
    """One request's arrays in a group, and what its leader hands back."""

    __slots__ = ("inputs", "rows", "outputs", "error", "done")

    def __init__(self, inputs, rows: int):
        self.inputs, self.rows = inputs, rows
        self.outputs: Optional[dict] = None
        self.error: Optional[BaseException] = None
        self.done: Optional[threading.Event] = None  # set by the leader; made when the request joins a group


class _Group:
    """Requests of one stack key that will share an interpreter call."""

    def __init__(self, key: tuple, first: _Request):
        self.key, self.opened = key, time.monotonic()
        self.members, self.rows = [first], first.rows


def stack_key(inputs) -> tuple:
    """(key, rows): requests with equal keys can be concatenated along the batch dimension;
    key None for inputs the batcher does not stack (not arrays, no batch dimension, batch
    sizes that differ between inputs): those run alone, and the runner judges them."""
    arrays = inputs.items() if isinstance(inputs, dict) else [("", inputs)]
    key, rows = [], set()
    for name, a in arrays:
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            return None, 0
        key.append((name, a.shape[1:], a.dtype.str))
        rows.add(a.shape[0])
    if len(rows) != 1:
        return None, 0
    return (isinstance(inputs, dict),) + tuple(sorted(key)), rows.pop()


def _concat(members: list):
    first = members[0].inputs
    if isinstance(first, dict):
        return {k: np.concatenate([m.inputs[k] for m in members]) for k in first}
    return np.concatenate([m.inputs for m in members])


def _split(outputs: dict, members: list) -> Optional[list]:
    """Each member's rows of every output; None when an output has no batch dimension."""
    total = sum(m.rows for m in members)
    if not all(isinstance(y, np.ndarray) and y.ndim and y.shape[0] == total for y in outputs.values()):
        return None
    parts, start = [], 0
    for m in members:
        parts.append({k: y[start:start + m.rows] for k, y in outputs.items()})
        start += m.rows
    return parts


class Batcher:
    """Coalesces concurrent `predict` calls for one model (see the module docstring)."""

    def __init__(self, runner, settings: BatchSettings, max_requests: int, in_flight: RequestsInFlight):
        """`max_requests`: how many requests can be in flight at once (serving.workers);
        `in_flight`: the server's requests in flight, shared by every batcher of the function
        (its lock guards the groups too)."""
        self.runner = runner
        self.settings = settings
        self.max_requests = max_requests
        self.in_flight = in_flight
        self.stats = BatchStats()
        self._changed = in_flight.changed  # requests came or went, a group filled up or was superseded
        self._open: dict = {}  # stack key -> the group that takes joiners
        self._free = WorkerSlots(runner.max_concurrent_invokes)  # interpreter calls at once

    def predict(self, inputs) -> dict:
        """`runner.predict(inputs)`, possibly computed in one call with other requests' rows."""
        if not self.settings.enabled:
            return self.runner.predict(inputs)
        key, rows = stack_key(inputs)
        request = _Request(inputs, rows)
        try:
            if key is None or rows > self.settings.max_batch_size:
                with self._changed:
                    self._count_in()
                with self._free:
                    request.outputs = self.runner.predict(inputs)
                self.stats.count_call(rows, 1)
                return request.outputs
            group = self._join(key, request)
            if group is None:
                request.done.wait()
            else:
                self._lead(group)
        finally:
            with self._changed:
                self.in_flight.batched -= 1
        if request.error is not None:
            raise request.error
        return request.outputs

    def _count_in(self) -> None:
        """(Caller holds the lock.) Count the caller inside a batcher; wake the leaders
        if nobody else can come now."""
        self.in_flight.batched += 1
        if self.in_flight.nobody_else_can_come(self.max_requests):
            self._changed.notify_all()

    def _join(self, key: tuple, request: _Request) -> Optional[_Group]:
        """Join the open group of `key` (None) or open a new one and return it to lead."""
        limit = self.settings.max_batch_size
        with self._changed:
            self._count_in()  # notified waiters wake only once this request is in a group
            group = self._open.get(key)
            if group is not None and group.rows + request.rows <= limit:
                request.done = threading.Event()
                group.members.append(request)
                group.rows += request.rows
                if group.rows >= limit:
                    del self._open[key]
                    self._changed.notify_all()
                return None
            if group is not None:  # no room: that group is as full as it gets, its leader can go
                self._changed.notify_all()
            group = _Group(key, request)
            if group.rows < limit:
                self._open[key] = group
            else:
                self._open.pop(key, None)
            return group

    def _lead(self, group: _Group) -> None:
        """Wait while the group is open, has room and another request in flight may still
        join it, at most the latency window; then wait for an interpreter, close the group,
        run it and answer every member."""
        deadline = group.opened + self.settings.max_latency_ms / 1000.0
        with self._changed:
            while self._open.get(group.key) is group and not self.in_flight.nobody_else_can_come(self.max_requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        with self._free:
            with self._changed:
                if self._open.get(group.key) is group:
                    del self._open[group.key]
                members = list(group.members)
            try:
                self._run(members)
            finally:
                for m in members:
                    if m.outputs is None and m.error is None:  # only if _run itself was interrupted
                        m.error = RuntimeError("the batch this request was part of was interrupted")
                    if m.done is not None:
                        m.done.set()

    def _run(self, members: list) -> None:
        """One interpreter call for every member; each alone when that call fails."""
        if len(members) > 1:
            try:
                parts = _split(self.runner.predict(_concat(members)), members)
            except Exception:
                parts = None
            if parts is not None:
                self.stats.count_call(sum(m.rows for m in members), len(members))
                for m, part in zip(members, parts):
                    m.outputs = part
                return
            self.stats.count_retry()
        for m in members:
            try:
                m.outputs = self.runner.predict(m.inputs)
            except Exception as e:  # this member's own error, raised in its own thread
                m.error = e
            self.stats.count_call(m.rows, 1)


METRICS = (("mlfn_batch_rows", "histogram", "Rows per interpreter call made by server-side batching."),
           ("mlfn_batch_requests_total", "counter", "Requests answered by those interpreter calls."),
           ("mlfn_batch_retries_total", "counter", "Shared interpreter calls that failed and ran request by request."))


def render_metrics(models: Mapping, base: list) -> str:
    """The batch metrics of every model whose batcher is on (`models`: name -> entry with a
    `batcher`); "" when batching is off everywhere."""
    rendered = [entry.batcher.stats.render(name, base) for name, entry in models.items()
                if entry.batcher.settings.enabled]
    if not rendered:
        return ""
    out = []
    for metric, kind, text in METRICS:
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        for lines in rendered:
            out += lines[metric]
    return "\n".join(out) + "\n"
