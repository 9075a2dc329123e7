"""Who may call a route: one check for every protocol, a function of (headers, route scope,
models), so HTTP, OpenWhisk web actions and any later protocol (gRPC metadata, CloudEvents
headers) call the same `Guard.admit`.

function.json `auth` (staged from mlfn.yaml; no secret is ever in it):

    {"enabled": true,
     "keys_file": "/var/run/mlfn/auth/keys.json",   # MLFN_AUTH_FILE overrides
     "reload_seconds": 5,      # the file is stat'ed at most this often: rotation bound
     "open": ["metrics", "openapi"],   # route scopes served without credentials
     "jwt": {...}}             # mlfn_runtime.jwt_verify.JwtSettings; absent: keys only

Route scopes (`routes.Route.scope`): None (health, readiness: always open), predict,
infer, metadata, metrics, openapi, and `activation` / `init` for OpenWhisk's /run and
/init: the invoker has already authenticated those (non-web activations need no key; web
activations are checked on their `__ow_headers` by whisk_action), except under Knative
(K_SERVICE set), where anyone reaching the port could call them: there /run needs the
predict scope and /init the explicit `init` scope.

Answers (`Denied`): 401 + `WWW-Authenticate: Bearer` (error="invalid_token" when a
credential was sent and is wrong, expired or revoked), 400 invalid_request for two
different credentials at once, 403 insufficient_scope, 429 + Retry-After. Messages never
hold a key, token or hash; metrics and logs carry the key id only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional
from urllib.parse import parse_qsl

from mlfn_runtime.http_messages import Response
from mlfn_runtime.rate_limit import RateLimiter

if TYPE_CHECKING:
    from mlfn_runtime import api_keys

DEFAULT_KEYS_FILE = "/var/run/mlfn/auth/keys.json"
MAX_CREDENTIAL = 8192
REALM = 'Bearer realm="mlfn"'
OPENWHISK_KEYS_PARAM = "mlfn_auth"  # the package parameter holding the key set document


@dataclass(frozen=True)
class Caller:
    id: str  # a key id, or "jwt:<subject>"
    scopes: tuple


class Denied(Exception):
    """A refused request: status, a message for the client, and the headers to send."""

    def __init__(self, status: int, message: str, headers: dict, caller_id: str = ""):
        super().__init__(message)
        self.status, self.message, self.headers, self.caller_id = status, message, headers, caller_id

    def response(self) -> Response:
        return Response(self.status, {"error": self.message}, dict(self.headers))

    def web_answer(self) -> dict:
        """The OpenWhisk web action answer ({statusCode, headers, body})."""
        return {"statusCode": self.status, "headers": {"Content-Type": "application/json", **self.headers},
                "body": {"error": self.message}}


def _unauthorized(message: str, error: Optional[str] = "invalid_token") -> Denied:
    challenge = REALM + (f', error="{error}"' if error else "")
    return Denied(401, message, {"WWW-Authenticate": challenge})


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = False
    keys_file: str = DEFAULT_KEYS_FILE
    reload_seconds: float = 5.0
    open: tuple = ("metrics", "openapi")
    jwt: Optional[dict] = None

    @classmethod
    def from_dict(cls, data: Optional[dict], environ: Optional[Mapping] = None) -> "AuthSettings":
        env = os.environ if environ is None else environ
        data = dict(data or {})
        return cls(bool(data.get("enabled")), env.get("MLFN_AUTH_FILE") or data.get("keys_file") or DEFAULT_KEYS_FILE,
                   float(data.get("reload_seconds", 5)), tuple(data.get("open", cls.open)), data.get("jwt") or None)


class Guard:
    def __init__(self, settings: AuthSettings, metrics=None, environ: Optional[Mapping] = None):
        self.settings = settings
        self.metrics = metrics
        self.under_knative = bool((os.environ if environ is None else environ).get("K_SERVICE"))
        self.limiter = RateLimiter()
        # api_keys (hashing, the watched file) is imported only when auth is on, or when an
        # activation carries a key set: a function without auth does not pay for it at start-up
        self.keys_file: "Optional[api_keys.WatchedFile]" = None
        if settings.enabled:
            from mlfn_runtime import api_keys

            self.keys_file = api_keys.WatchedFile(settings.keys_file, api_keys.parse_key_set,
                                                  settings.reload_seconds, api_keys.KeySet())
        self._inline: "Optional[api_keys.InlineKeySets]" = None  # made on the first activation's key set
        self.jwt = None
        self._platform_jwt: Optional[tuple] = None  # (the key set's jwt settings, their verifier)
        if settings.enabled and settings.jwt:
            from mlfn_runtime.jwt_verify import JwtSettings, JwtVerifier

            self.jwt = JwtVerifier(JwtSettings.from_dict(settings.jwt))

    @classmethod
    def from_function(cls, function, metrics=None) -> "Guard":
        """The guard of a loaded function (None: an image for code actions, no auth section)."""
        return cls(AuthSettings.from_dict(function.auth if function is not None else None), metrics)

    @staticmethod
    def models(function, params: Mapping, query: Mapping) -> tuple:
        """The models a request concerns: the one its path or `?model=` names, else all of them."""
        named = params.get("name") or query.get("model")
        if named:
            return (named,)
        return tuple(function.models) if function is not None else ()

    def admit_activation(self, body, function) -> Optional[Caller]:
        """An OpenWhisk /run: the package parameter `mlfn_auth` (the key set) is taken out of
        the value; a web activation (`__ow_method`) is checked on its `__ow_headers`; a
        non-web one was authenticated by the platform (None)."""
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, dict):
            return None
        key_set = self.key_set_from_activation(value)
        if "__ow_method" not in value:
            return None
        headers = value.get("__ow_headers")
        query = dict(parse_qsl(value["__ow_query"])) if isinstance(value.get("__ow_query"), str) else {}
        return self.admit(headers if isinstance(headers, dict) else {}, "web", self.models(function, {}, query),
                          key_set)

    def counted(self, caller: Optional[Caller], response):
        """`response` of an activation, counted for its caller (a web answer by its statusCode)."""
        if caller is not None and self.metrics is not None:
            body = response.body
            status = body.get("statusCode", response.status) if isinstance(body, dict) else response.status
            self.metrics.observe_caller(caller.id, status if isinstance(status, int) else response.status)
        return response

    def route_scope(self, scope: Optional[str]) -> Optional[str]:
        """The scope a request must hold, or None when the route is open here."""
        if not self.settings.enabled or scope is None or scope in self.settings.open:
            return None
        if scope in ("activation", "init"):
            return None if not self.under_knative else ("predict" if scope == "activation" else "init")
        return "predict" if scope == "web" else scope

    def admit(self, headers: Mapping, scope: Optional[str], models: tuple,
              key_set: Optional[api_keys.KeySet] = None) -> Optional[Caller]:
        """The caller allowed to use `scope` on every one of `models`, None for an open
        route; raises Denied. `key_set` (OpenWhisk package parameters) replaces the file's."""
        needed = self.route_scope(scope)
        if needed is None:
            return None
        from mlfn_runtime import api_keys

        try:
            caller, rate, burst = self._identify(headers, key_set or self.keys_file.current())
            missing = [m for m in models or ("*",) if not api_keys.scope_allows(caller.scopes, m, needed)]
            if missing:
                raise Denied(403, f"this credential may not use {needed} on model {missing[0]!r}",
                             {"WWW-Authenticate": REALM + ', error="insufficient_scope"'}, caller.id)
            wait = self.limiter.wait_seconds(caller.id, rate, burst)
            if wait:
                raise Denied(429, f"rate limit exceeded; retry in {wait} s", {"Retry-After": str(wait)}, caller.id)
        except Denied as d:
            if self.metrics is not None:
                self.metrics.observe_denial(d.caller_id, d.status)
            raise
        return caller

    def key_set_from_activation(self, value: dict) -> Optional[api_keys.KeySet]:
        """The key set bound as the package parameter `mlfn_auth` (removed from `value`)."""
        raw = value.pop(OPENWHISK_KEYS_PARAM, None)
        if raw is None:
            return None
        try:
            if self._inline is None:
                from mlfn_runtime.api_keys import InlineKeySets

                self._inline = InlineKeySets()
            return self._inline.parse(raw)
        except ValueError:
            raise Denied(500, f"the '{OPENWHISK_KEYS_PARAM}' parameter is not a valid key set", {}) from None

    def _identify(self, headers: Mapping, key_set: api_keys.KeySet) -> tuple:
        from mlfn_runtime import api_keys

        credential = _credential(headers)
        if self.jwt is not None and credential.count(".") == 2 and not credential.startswith(api_keys.KEY_PREFIX):
            from mlfn_runtime.jwt_verify import TokenError

            verifier = self._verifier(key_set)
            try:
                claims = verifier.verify(credential, verifier.jwks(key_set.jwks))
            except TokenError as e:
                raise _unauthorized(str(e)) from None
            s = verifier.settings
            return Caller("jwt:" + claims.subject, claims.scopes), s.rate, s.burst
        record = key_set.find(credential)
        if record is None:
            raise _unauthorized("the API key is not valid (unknown or revoked)")
        import time

        if record.expired(time.time()):
            raise _unauthorized("the API key has expired")
        return Caller(record.id, record.scopes), record.rate, record.burst


    def _verifier(self, key_set: api_keys.KeySet):
        """function.json's verifier, or one with the platform's `jwt` settings laid over it
        (built once per key set document)."""
        if key_set.jwt is None:
            return self.jwt
        built = self._platform_jwt
        if built is None or built[0] is not key_set.jwt:
            from mlfn_runtime.jwt_verify import JwtSettings, JwtVerifier

            try:
                verifier = JwtVerifier(JwtSettings.from_dict({**self.settings.jwt, **key_set.jwt}))
            except (ValueError, TypeError) as e:
                raise Denied(500, f"the platform's JWT settings are not valid: {e}", {}) from None
            built = self._platform_jwt = (key_set.jwt, verifier)
        return built[1]


def _credential(headers: Mapping) -> str:
    """The one credential of a request: `Authorization: Bearer X` or `X-API-Key: X`."""
    auth = headers.get("Authorization") or headers.get("authorization")
    api_key = headers.get("X-API-Key") or headers.get("x-api-key")
    bearer = None
    if auth is not None:
        scheme, _, value = str(auth).strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <key or token>'", "invalid_request")
        bearer = value.strip()
    if bearer is not None and api_key is not None:
        raise Denied(400, "send one credential: Authorization or X-API-Key, not both",
                     {"WWW-Authenticate": REALM + ', error="invalid_request"'})
    credential = bearer if bearer is not None else api_key
    if credential is None:
        raise _unauthorized("this route needs an API key or token (Authorization: Bearer ... or X-API-Key)", None)
    credential = str(credential).strip()
    if not credential or len(credential) > MAX_CREDENTIAL or not credential.isascii() or not credential.isprintable():
        raise _unauthorized("the credential is malformed")
    return credential
