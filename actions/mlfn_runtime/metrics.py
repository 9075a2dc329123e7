"""Prometheus metrics, hand-written text exposition (format 0.0.4), no dependency.

- mlfn_requests_total{model,endpoint,status}          counter
- mlfn_request_duration_seconds{model,endpoint,status} histogram
- mlfn_model_load_seconds{model}                       gauge
- mlfn_startup_seconds                                 gauge (process start -> ready)
- mlfn_cold_starts_total                               counter (1 per process, at its first request)
- mlfn_inflight_requests                               gauge
- mlfn_payload_events_sent_total, mlfn_payload_events_dropped_total   counters (payload logging)
- mlfn_caller_requests_total{caller}                   counter, per API key id (or jwt:<subject>)
- mlfn_caller_errors_total{caller}                     counter, those answered >= 400
- mlfn_caller_throttled_total{caller}                  counter, 429 past the caller's rate
- mlfn_auth_denied_total{status}                       counter, 400/401/403 refusals (no caller known)
Every series also carries `service` and `revision` (Knative's K_SERVICE / K_REVISION)
when those are set."""
from __future__ import annotations

import threading
from bisect import bisect_left

from mlfn_runtime.in_flight import RequestsInFlight

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_set(pairs) -> str:
    pairs = [(k, v) for k, v in pairs if v is not None]
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) or abs(v) >= 1e15 else str(int(v))


class Metrics:
    def __init__(self, in_flight: RequestsInFlight, service: str | None = None, revision: str | None = None):
        """`in_flight`: the server's requests in flight (the function's, which its batchers read)."""
        self.in_flight = in_flight
        self.base = [(k, v) for k, v in (("service", service), ("revision", revision)) if v]
        self._lock = threading.Lock()
        self._hist: dict = {}  # (model, endpoint, status) -> [bucket counts..., sum, count]
        self.load_seconds: dict = {}
        self.startup_seconds: float | None = None
        self.cold_starts = 0
        self.payload_events = {"sent": 0, "dropped": 0}
        self._callers: dict = {}  # caller id -> [requests, errors, throttled]
        self._denied: dict = {}  # status -> count

    def count_payload_events(self, sent: int = 0, dropped: int = 0) -> None:
        """Payload-logging events delivered to the sink, and dropped (queue full, sink down)."""
        with self._lock:
            self.payload_events["sent"] += sent
            self.payload_events["dropped"] += dropped

    def observe_caller(self, caller: str, status: int) -> None:
        """A request of a known caller (a key id, never the key), answered with `status`."""
        with self._lock:
            c = self._callers.setdefault(caller, [0, 0, 0])
            c[0] += 1
            c[1] += status >= 400
            c[2] += status == 429

    def observe_denial(self, caller: str, status: int) -> None:
        """A refused request: counted for its caller when known (403, 429), else by status."""
        if caller:
            self.observe_caller(caller, status)
            return
        with self._lock:
            self._denied[status] = self._denied.get(status, 0) + 1

    def _render_callers(self, base: list) -> list:
        with self._lock:
            callers, denied = dict(self._callers), dict(self._denied)
        if not callers and not denied:
            return []
        out = []
        for i, (name, what) in enumerate((("requests", "Requests"), ("errors", "Requests answered with an error"),
                                          ("throttled", "Requests refused past the rate limit"))):
            out += [f"# HELP mlfn_caller_{name}_total {what}, by caller (API key id or jwt:subject).",
                    f"# TYPE mlfn_caller_{name}_total counter"]
            out += [f"mlfn_caller_{name}_total{label_set(base + [('caller', k)])} {v[i]}"
                    for k, v in sorted(callers.items())]
        out += ["# HELP mlfn_auth_denied_total Requests refused before a caller was known, by status.",
                "# TYPE mlfn_auth_denied_total counter"]
        out += [f"mlfn_auth_denied_total{label_set(base + [('status', str(k))])} {v}" for k, v in sorted(denied.items())]
        return out

    @property
    def inflight(self) -> int:
        return self.in_flight.admitted

    def start(self) -> None:
        self.in_flight.start()
        with self._lock:
            if self.cold_starts == 0:
                self.cold_starts = 1

    def observe(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model or "", endpoint, str(status))
        self.in_flight.finish()
        with self._lock:
            h = self._hist.get(key)
            if h is None:
                h = self._hist[key] = [0] * (len(BUCKETS) + 2)
            h[bisect_left(BUCKETS, seconds)] += 1 if seconds <= BUCKETS[-1] else 0
            h[-2] += seconds
            h[-1] += 1

    def render(self) -> str:
        base = self.base
        out = [
            "# HELP mlfn_requests_total Requests served, by model, endpoint and HTTP status.",
            "# TYPE mlfn_requests_total counter",
        ]
        with self._lock:
            hist = {k: list(v) for k, v in sorted(self._hist.items())}
            inflight, cold = self.inflight, self.cold_starts
            payload_events = dict(self.payload_events)
        for (model, endpoint, status), h in hist.items():
            out.append(f"mlfn_requests_total{label_set(base + [('model', model), ('endpoint', endpoint), ('status', status)])} {h[-1]}")
        out += [
            "# HELP mlfn_request_duration_seconds Request latency, by model, endpoint and HTTP status.",
            "# TYPE mlfn_request_duration_seconds histogram",
        ]
        for (model, endpoint, status), h in hist.items():
            lab = base + [("model", model), ("endpoint", endpoint), ("status", status)]
            acc = 0
            for le, n in zip(BUCKETS, h):
                acc += n
                out.append(f"mlfn_request_duration_seconds_bucket{label_set(lab + [('le', _num(le))])} {acc}")
            out.append(f"mlfn_request_duration_seconds_bucket{label_set(lab + [('le', '+Inf')])} {h[-1]}")
            out.append(f"mlfn_request_duration_seconds_sum{label_set(lab)} {h[-2]!r}")
            out.append(f"mlfn_request_duration_seconds_count{label_set(lab)} {h[-1]}")
        out += ["# HELP mlfn_model_load_seconds Time to load each model into the interpreter.",
                "# TYPE mlfn_model_load_seconds gauge"]
        for model, s in self.load_seconds.items():
            out.append(f"mlfn_model_load_seconds{label_set(base + [('model', model)])} {s!r}")
        if self.startup_seconds is not None:
            out += ["# HELP mlfn_startup_seconds Process start until ready to serve.",
                    "# TYPE mlfn_startup_seconds gauge",
                    f"mlfn_startup_seconds{label_set(base)} {self.startup_seconds!r}"]
        out += ["# HELP mlfn_cold_starts_total Cold starts served by this process (1 after its first request).",
                "# TYPE mlfn_cold_starts_total counter",
                f"mlfn_cold_starts_total{label_set(base)} {cold}",
                "# HELP mlfn_inflight_requests Requests being served now.",
                "# TYPE mlfn_inflight_requests gauge",
                f"mlfn_inflight_requests{label_set(base)} {inflight}"]
        for what, text in (("sent", "delivered to logging.sink"), ("dropped", "dropped (queue full or sink unreachable)")):
            out += [f"# HELP mlfn_payload_events_{what}_total Payload-logging events {text}.",
                    f"# TYPE mlfn_payload_events_{what}_total counter",
                    f"mlfn_payload_events_{what}_total{label_set(base)} {payload_events[what]}"]
        out += self._render_callers(base)
        return "\n".join(out) + "\n"
