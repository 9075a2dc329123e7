"""Per-version numbers of one analysis window: requests, errors and the 99th percentile
latency of ONE version, never of the alias as a whole.

- `ActivationMetrics`: from the platform's activation records of the version action
  (Target.activations; OpenWhisk and the local target).
- `PrometheusMetrics`: from Prometheus' HTTP API (GET /api/v1/query), with default PromQL
  over the Knative queue-proxy's per-revision request count and latency histogram, or
  user templates with {revision}, {namespace}, {service}, {interval} filled in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from mlfn.errors import TargetError

DEFAULT_QUERIES = {
    "requests": 'sum(increase(revision_app_request_count{namespace_name="{namespace}",'
                'revision_name="{revision}"}[{interval}]))',
    "errors": 'sum(increase(revision_app_request_count{namespace_name="{namespace}",'
              'revision_name="{revision}",response_code_class="5xx"}[{interval}]))',
    "p99": 'histogram_quantile(0.99, sum by (le) (rate(revision_app_request_latencies_bucket{'
           'namespace_name="{namespace}",revision_name="{revision}"}[{interval}])))',
}
PLACEHOLDERS = ("revision", "namespace", "service", "interval")  # filled in as {name}; other braces stay


@dataclass
class Window:
    """One version's numbers over one window."""

    requests: int
    errors: int
    p99_ms: Optional[float]

    @property
    def error_rate(self) -> float:
        """Percent of the window's requests that failed (0 when there were none)."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def values(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 2),
                "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 1)}

    def plus(self, other: "Window") -> "Window":
        """Both windows as one (the p99 of the two is bounded by the larger)."""
        p99s = [p for p in (self.p99_ms, other.p99_ms) if p is not None]
        return Window(self.requests + other.requests, self.errors + other.errors, max(p99s) if p99s else None)


def percentile(values: list, pct: float) -> Optional[float]:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(pct / 100.0 * len(ordered)) - 1)])


class ActivationMetrics:
    """Windows from the activation records a Target keeps per version action."""

    def __init__(self, target, function: str):
        self.target = target
        self.function = function

    def window(self, version: str, since_ms: int, until_ms: int) -> Window:
        records = [a for a in self.target.activations(self.function, version, since_ms) if a.start_ms < until_ms]
        return Window(len(records), sum(1 for a in records if a.failed),
                      percentile([a.duration_ms for a in records], 99))


class PrometheusMetrics:
    """Windows from Prometheus instant queries; `revision_of(version)` names the revision."""

    def __init__(self, url: str, namespace: str, service: str, revision_of: Callable[[str], str],
                 queries: Optional[dict] = None, timeout: float = 10.0):
        import requests

        self.url = url.rstrip("/")
        self.namespace, self.service, self.revision_of = namespace, service, revision_of
        self.queries = {**DEFAULT_QUERIES, **(queries or {})}
        self.timeout = timeout
        self.session = requests.Session()

    def promql(self, kind: str, version: str, seconds: int) -> str:
        values = {"revision": self.revision_of(version), "namespace": self.namespace, "service": self.service,
                  "interval": f"{max(1, seconds)}s"}
        text = self.queries[kind]
        for name in PLACEHOLDERS:
            text = text.replace("{" + name + "}", values[name])
        return text

    def query(self, promql: str, at_s: float) -> Optional[float]:
        """The value of an instant query (the sum of a vector; None when it is empty or NaN)."""
        import requests

        where = f"{self.url}/api/v1/query"
        try:
            resp = self.session.get(where, params={"query": promql, "time": f"{at_s:.3f}"}, timeout=self.timeout)
            doc = resp.json()
        except (requests.RequestException, ValueError) as e:
            raise TargetError(f"Prometheus at {self.url} did not answer the query {promql!r}: {e}.") from None
        if resp.status_code != 200 or doc.get("status") != "success":
            raise TargetError(f"Prometheus at {self.url} refused the query {promql!r}: "
                              f"{doc.get('error') or resp.status_code}.")
        data = doc.get("data") or {}
        results = data.get("result") or []
        if data.get("resultType") == "scalar":
            results = [{"value": results}]
        values = [float(r["value"][1]) for r in results if isinstance(r, dict) and r.get("value")]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) if values else None

    def window(self, version: str, since_ms: int, until_ms: int) -> Window:
        seconds = round((until_ms - since_ms) / 1000)
        at = until_ms / 1000
        requests = self.query(self.promql("requests", version, seconds), at) or 0.0
        errors = self.query(self.promql("errors", version, seconds), at) or 0.0
        p99 = self.query(self.promql("p99", version, seconds), at)
        return Window(int(round(requests)), int(round(errors)), p99)


class AggregateMetrics:
    """The alias as a whole (every version's numbers summed): what a rollout judged on the
    aggregate would see. Only for comparison (bench/rollout_bench.py); never a gate."""

    def __init__(self, per_version, versions: list):
        self.per_version = per_version
        self.versions = versions

    def window(self, version: str, since_ms: int, until_ms: int) -> Window:
        total = Window(0, 0, None)
        for v in self.versions:
            total = total.plus(self.per_version.window(v, since_ms, until_ms))
        return total
