"""Probes: `/healthz` (readiness: 503 while shutting down or without a function),
`/livez`, and `/metrics` (Prometheus text, `mlfn_runtime.metrics`, and the batch metrics
of `mlfn_runtime.batching` when serving.batching is on)."""
from __future__ import annotations

from mlfn_runtime.batching import render_metrics as batch_metrics
from mlfn_runtime.http_messages import Response


def health(state, req, params) -> Response:
    if state.draining:
        return Response(503, {"ready": False, "reason": "shutting down"})
    fn = state.function
    if fn is None:
        return Response(503, {"ready": False, "reason": "no function loaded"})
    return Response(200, {"ready": True, "function": fn.name, "models": list(fn.models)})


def live(state, req, params) -> Response:
    return Response(200, {"live": True})


def metrics(state, req, params) -> Response:
    text = state.metrics.render()
    if state.function is not None:
        text += batch_metrics(state.function.models, state.metrics.base)
    return Response(200, text.encode(), {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
