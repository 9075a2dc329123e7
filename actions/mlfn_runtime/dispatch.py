"""One request through its route, the same over HTTP/1.1 (http_server) and over h2c (h2c):
the caller is admitted (mlfn_runtime.auth), the body read by the transport's own reader
(which also runs the route's own admission and limits), the handler run inside a worker slot
when the route is limited, errors mapped in one place (errors.describe_error), the caller
counted and the exchange handed to payload logging."""
from __future__ import annotations

from typing import Callable, Mapping

from mlfn_runtime.auth import Denied
from mlfn_runtime.http_messages import Request, Response, error_response


def answer(state, route, params: dict, method: str, path: str, query: dict, headers: Mapping,
           read_body: Callable[[], bytes], where: str) -> Response:
    """The response to one request on `route` (never raises)."""
    req, caller = None, None
    try:
        caller = state.auth.admit(headers, route.scope, state.auth.models(state.function, params, query))
        req = Request(method, path, query, headers, read_body())
        if route.limited:
            with state.slots:
                resp = route.handler(state, req, params)
        else:
            resp = route.handler(state, req, params)
    except Denied as d:
        resp = d.response()
    except Exception as e:
        resp = error_response(e, where)
    if caller is not None:
        state.metrics.observe_caller(caller.id, resp.status)
    if req is not None:
        state.payload_log.record(route.endpoint, req, resp)  # queued: never blocks the request
    return resp
