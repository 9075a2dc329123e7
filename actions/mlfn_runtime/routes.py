"""Every route of the function's HTTP server, in one table.

A route: the methods it takes, a path pattern (`{name}` is one path segment, `[...]` is
optional, `{rest*}` is the rest of the path), the endpoint label of its metrics, the
handler `(state, request, params) -> Response` of one protocol module, how large a body
it reads (`body`), whether it counts against `serving.workers` (`limited`: probes
and metrics answer even when every worker is busy), and `admit(state)`, run before the
body is read, which raises to refuse the request without reading its body. The first route whose pattern
matches the path answers: a method it does not take is a 405, no match a 404.

The protocols a function rarely speaks (CloudEvents, Open Inference Protocol, TensorFlow
Serving, the OpenAPI document) are named here by module and imported on their first
request (`_lazy`), not at start-up: a cold start imports only /predict, /run and the probes."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from mlfn_runtime import predict_route, probes, whisk_action
from mlfn_runtime.errors import MethodNotAllowed, NotFound
from mlfn_runtime.http_messages import Response
from mlfn_runtime.serving import Serving

GET = ("GET", "HEAD")
POST = ("POST",)
ANY = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")

# body: how many bytes a route reads, from serving.max_payload_bytes
NO_BODY = "none"
PAYLOAD = "payload"  # serving.max_payload_bytes
ACTIVATION = "activation"  # the payload plus /run's activation fields
INIT = "init"  # /init: env only, or code when code actions are on (whisk_action.init_body_limit)


def _compile(pattern: str) -> "re.Pattern":
    out = re.escape(pattern)
    out = out.replace(r"\[", "(?:").replace(r"\]", ")?")
    out = re.sub(r"\\\{(\w+)\\\*\\\}", r"(?P<\1>.*)", out)
    out = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", out)
    return re.compile(out)


@dataclass(frozen=True)
class Route:
    methods: tuple
    pattern: str
    endpoint: str
    handler: Callable
    body: str = NO_BODY
    limited: bool = True
    admit: Optional[Callable] = None
    regex: "re.Pattern" = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "regex", _compile(self.pattern))

    @property
    def scope(self):
        """What a caller must be allowed to do here (mlfn_runtime.auth); None: always open."""
        return SCOPES.get(self.endpoint, "metadata")

    @property
    def limit_name(self) -> str:
        """What sets `body_limit`, for the 413 message."""
        return "the /init limit" if self.body == INIT else "serving.max_payload_bytes"

    def body_limit(self, serving: Serving) -> int:
        if self.body == INIT:
            return whisk_action.init_body_limit(serving)
        max_payload = serving.max_payload_bytes
        return {NO_BODY: 0, PAYLOAD: max_payload, ACTIVATION: max_payload + whisk_action.RUN_ENVELOPE}[self.body]


def _lazy(module: str, name: str) -> Callable:
    """The handler `name` of `mlfn_runtime.<module>`, imported when its route is first used."""
    handler: list = []

    def handle(state, req, params) -> Response:
        if not handler:
            handler.append(getattr(importlib.import_module("mlfn_runtime." + module), name))
        return handler[0](state, req, params)

    handle.__qualname__ = handle.__name__ = f"{module}.{name}"
    return handle


def _openapi(state, req, params) -> Response:
    """GET /openapi.json: this table, the models and the security in force (mlfn_runtime.openapi)."""
    from mlfn_runtime import openapi

    return Response(200, openapi.build_document(state.function, state.auth, ROUTES))


MODEL = "/models/{name}[/versions/{version}]"
ROUTES = (
    Route(POST, "/init", "init", whisk_action.init_route, INIT, admit=whisk_action.admit_init),
    Route(POST, "/run", "run", whisk_action.run_route, ACTIVATION, admit=whisk_action.admit_run),
    Route(POST, "/predict", "predict", predict_route.predict, PAYLOAD),
    Route(POST, "/", "predict", _lazy("cloudevents_route", "root"), PAYLOAD),  # an event (ce-* headers) or a predict body
    Route(POST, "/events", "events", _lazy("cloudevents_route", "event"), PAYLOAD),
    Route(GET, "/healthz", "health", probes.health, limited=False),
    Route(GET, "/readyz", "health", probes.health, limited=False),
    Route(GET, "/health", "health", probes.health, limited=False),
    Route(GET, "/livez", "health", probes.live, limited=False),
    Route(("GET",), "/metrics", "metrics", probes.metrics, limited=False),
    Route(GET, "/openapi.json", "openapi", _openapi, limited=False),
    Route(("GET",), "/v2", "v2_server", _lazy("oip", "server_metadata")),
    Route(GET, "/v2/health/live", "v2_live", _lazy("oip", "live"), limited=False),
    Route(GET, "/v2/health/ready", "v2_ready", _lazy("oip", "ready"), limited=False),
    Route(("GET",), "/v2" + MODEL, "v2_metadata", _lazy("oip", "model_metadata")),
    Route(GET, "/v2" + MODEL + "/ready", "v2_model_ready", _lazy("oip", "model_ready"), limited=False),
    Route(POST, "/v2" + MODEL + "/infer", "v2_infer", _lazy("oip", "infer"), PAYLOAD),
    Route(ANY, "/v2/{rest*}", "v2_unknown", _lazy("oip", "unknown")),
    Route(("GET",), "/v1" + MODEL, "v1_status", _lazy("tfserving", "status")),
    Route(("GET",), "/v1" + MODEL + "/metadata", "v1_metadata", _lazy("tfserving", "metadata")),
    Route(POST, "/v1" + MODEL + ":predict", "v1_predict", _lazy("tfserving", "predict"), PAYLOAD),
    Route(ANY, "/v1/models/{rest*}", "v1_unknown", _lazy("tfserving", "unknown")),
)

# endpoint label -> auth scope (mlfn_runtime.auth); an endpoint not listed needs "metadata"
SCOPES = {"init": "init", "run": "activation", "predict": "predict", "health": None, "metrics": "metrics",
          "openapi": "openapi", "v2_live": None, "v2_ready": None, "v2_model_ready": None, "v2_infer": "infer",
          "v1_predict": "predict", "events": "predict"}


def _not_found(state, req, params):
    raise NotFound(f"no route {req.path}; try POST /predict, POST /run, /v2/models/..., /v1/models/...")


UNKNOWN = Route(ANY, "", "unknown", _not_found)


def _static_routes() -> dict:
    """path -> route for the routes without parameters that no earlier route matches first:
    their requests (/predict, /run, /healthz, ...) are found by one lookup, not a regex scan."""
    out: dict = {}
    for i, route in enumerate(ROUTES):
        if "{" not in route.pattern and "[" not in route.pattern and route.pattern not in out \
                and not any(r.regex.fullmatch(route.pattern) for r in ROUTES[:i]):
            out[route.pattern] = route
    return out


STATIC = _static_routes()


def match(method: str, path: str) -> tuple:
    """(route, path parameters) for a request; the handler of a 404/405 route raises."""
    route = STATIC.get(path)
    if route is not None:
        return (route, {}) if method in route.methods else (_refuse(route, method), {})
    for route in ROUTES:
        m = route.regex.fullmatch(path)
        if m is None:
            continue
        if method not in route.methods:
            return _refuse(route, method), {}
        return route, {k: v for k, v in m.groupdict().items() if v is not None}
    return UNKNOWN, {}


def _refuse(route: Route, method: str) -> Route:
    def refuse(state, req, params):
        raise MethodNotAllowed(f"{req.path} takes {' or '.join(route.methods)}, not {method}")

    return Route(route.methods, route.pattern, route.endpoint, refuse)
