"""The OpenWhisk action protocol: `POST /init` once, then `POST /run` per activation.
Decodes the invoker's bodies into the data plane's request and encodes its answer.

What the invoker sends and how it reads the answers (see actions/README.md):
- /init `{"value": {"name", "main", "binary", "code"?, "env": {...}}}`; `env` values become
  environment variables before anything runs. Without `code` this is a docker action: the
  bundled model is served. With `env.MLFN_ALIAS_ROUTES` (`mlfn_runtime.router.parse_routes`)
  the action is a weighted-alias conductor and no code is needed. With `code` (Python
  source with `main`, or a base64 zip with `__main__.py` when `binary` is true) that code's
  `main(params)` runs instead, only when serving.code_actions is on and
  `env.MLFN_INIT_TOKEN` matches (403 otherwise). A second /init is refused with 403 before
  its body is read, and so is a /run before /init.
- With serving.openwhisk false (the default on Knative) /init and /run are 404.
- /run `{"value": ..., "namespace", "action_name", "activation_id", "deadline": "<ms>", ...}`;
  every key but `value` is the activation variable `__OW_<KEY>` (`mlfn_runtime.activation`).
- 200 + object = success; 200 + `{"error"}` = application error (bad input);
  non-200 = developer error (a bug, or a broken model); 503 while shutting down.
- Web actions (`__ow_method` in the value): the request is read from `__ow_body`
  (base64 for binary or raw-http bodies) and the answer is `{statusCode, headers, body}`.
- After every activation `XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX` is printed on stdout and stderr.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import sys
import threading
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl

from mlfn_runtime.activation import Activations, bind_function, variables
from mlfn_runtime.auth import Denied
from mlfn_runtime.errors import Forbidden, InvalidInput, NotFound, describe_error
from mlfn_runtime.http_messages import Response, parse_json
from mlfn_runtime.router import ALIAS_ROUTES_ENV, conduct, parse_routes
from mlfn_runtime.runtime_log import log
from mlfn_runtime.serving import INIT_TOKEN_ENV, Serving

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
INIT_BODY_LIMIT = 1024 * 1024  # /init without code: name, main, env (OpenWhisk caps parameters at 1 MB)
CODE_INIT_BODY_LIMIT = 8 * 1024 * 1024  # /init with code, when code actions are on
RUN_ENVELOPE = 16 * 1024  # /run wraps the payload in a few activation fields
CODE_ACTIONS_OFF = ("This function does not run code sent to /init (code actions are off; "
                    "see serving.code_actions in actions/README.md).")


def init_body_limit(serving: Serving) -> int:
    return CODE_INIT_BODY_LIMIT if serving.code_actions else INIT_BODY_LIMIT


class WhiskAction:
    """The OpenWhisk side of one container: initialized once, then runs activations.
    `serving` says whether code sent to /init may run (code_actions) and the init token."""

    def __init__(self, function=None, serving: Optional[Serving] = None):
        self.function = function
        self.serving = serving or Serving()
        bind_function(function)
        self.activations = Activations()
        self.initialized = False
        self.main: Optional[Callable] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ /init
    def init(self, body: Any) -> Response:
        with self._lock:
            if self.initialized:
                return Response(403, {"error": "Cannot initialize the action more than once."})
            value = body.get("value") if isinstance(body, dict) else None
            value = {} if value is None else value
            if not isinstance(value, dict):
                return Response(400, {"error": "The /init body must be {\"value\": {...}}."})
            env = value.get("env") or {}
            if not isinstance(env, dict):
                return Response(400, {"error": "value.env in /init must be an object of strings."})
            env = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}
            bad = [k for k, v in env.items() if not k or "=" in k or "\0" in k or "\0" in v]
            if bad:
                return Response(400, {"error": f"value.env in /init holds {bad[0]!r}, which cannot be an environment variable."})
            token = env.pop(INIT_TOKEN_ENV, "")  # never exported: code must not read the platform's secret
            try:
                return self._load(value, env, token)
            finally:
                _end_of_activation()

    def _load(self, value: dict, env: dict, token: str) -> Response:
        """Decide what /run runs (the conductor, sent code, or the bundled model) before
        anything from this /init takes effect; then export `env`."""
        code = value.get("code")
        main = None
        if ALIAS_ROUTES_ENV in env:
            try:
                main = functools.partial(conduct, routes=parse_routes(env[ALIAS_ROUTES_ENV]))
            except ValueError as e:
                return Response(400, {"error": f"value.env in /init: {e}."})
        elif code:
            refusal = self._refuse_code(token)
            if refusal:
                return Response(403, {"error": refusal})
        elif self.function is None:
            return Response(502, {"error": "The image holds no function (no function.json) and /init sent no code."})
        os.environ.update(env)
        self.activations.add_base(env)
        if code and main is None:
            from mlfn_runtime.code_action import load_action

            try:
                main = load_action(code, bool(value.get("binary")), value.get("main") or "main")
            except Exception as e:  # the user's code: report, do not crash
                log(_traceback())
                return Response(502, {"error": f"Initialization has failed: {e}"})
        self.main = main
        self.initialized = True
        return Response(200, {"ok": True})

    def _refuse_code(self, token: str) -> Optional[str]:
        """Why code sent to /init may not run (None: it may)."""
        if not self.serving.code_actions:
            return CODE_ACTIONS_OFF
        given = hashlib.sha256(token.encode()).hexdigest()
        if not token or not hmac.compare_digest(given, self.serving.init_token_sha256):
            return f"The init token (value.env.{INIT_TOKEN_ENV} in /init) is missing or wrong."
        return None

    # ------------------------------------------------------------------ /run
    def run(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return Response(400, {"error": "The /run body must be a JSON object with 'value'."})
        if not self.initialized:  # as OpenWhisk's runtimes: no activation before /init
            return Response(403, {"error": "The action is not initialized; POST /init before /run."})
        value = body.get("value", {})
        try:
            with self.activations.enter(variables(body)):
                if self.main is not None:
                    return self._run_code(value)
                if isinstance(value, dict) and "__ow_method" in value:
                    return Response(200, self._run_web(value))
                return self._run_model(value)
        finally:
            _end_of_activation()

    def _run_code(self, value) -> Response:
        try:
            result = self.main(value)
        except Exception as e:
            log(_traceback())
            return Response(502, {"error": f"An error has occurred (see logs for details): {e.__class__.__name__}: {e}"})
        if not isinstance(result, (dict, list)):
            return Response(502, {"error": "The action did not return a dictionary or an array."})
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            return Response(502, {"error": "The action returned a result that is not JSON serializable."})
        return Response(200, result)

    def _run_model(self, value) -> Response:
        try:
            result = self.function.predict(value)
        except Exception as e:
            status, message = describe_error(e, "/run")
            # bad input is an application error (the caller's), anything else a developer error
            return Response(200 if status < 500 else 502, {"error": message})
        return Response(200, result, model=result.get("model") or "")

    def _run_web(self, value: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        try:
            body = self.function.predict(web_request(value))
            return {"statusCode": 200, "headers": headers, "body": body}
        except Exception as e:
            status, message = describe_error(e, "/run (web action)")
            return {"statusCode": status, "headers": headers, "body": {"error": message}}


def _end_of_activation() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.write(SENTINEL + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def _traceback() -> str:
    import traceback  # lazy: only errors pay for it

    return traceback.format_exc().rstrip()


def web_request(value: dict) -> dict:
    """The predict request carried by a web action invocation.

    Non-raw web actions get JSON body fields as top-level parameters; raw-http ones (and
    non-JSON bodies) get `__ow_body`: base64 for binary content and JSON, plain text
    otherwise. An image body becomes `{"image": bytes}`."""
    params = {k: v for k, v in value.items() if not k.startswith("__ow_")}
    query = value.get("__ow_query")
    if isinstance(query, str) and query:
        for k, v in parse_qsl(query):
            params.setdefault(k, v)
    body = value.get("__ow_body")
    if body is None or body == "":
        return params
    headers = value.get("__ow_headers") or {}
    if not isinstance(headers, dict):
        raise InvalidInput("'__ow_headers' must be an object")
    headers = {str(k).lower(): v for k, v in headers.items()}
    ctype = str(headers.get("content-type", "")).split(";")[0].strip().lower()
    if not isinstance(body, str):
        if isinstance(body, dict):
            return {**params, **body}
        raise InvalidInput("'__ow_body' must be a string")
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("'__ow_body' is not valid base64 for a binary body") from None
        return {**params, "image": data}
    text = body
    if not body.lstrip().startswith(("{", "[")):
        try:  # raw-http JSON arrives base64-encoded
            text = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            text = body
    data = parse_json(text, "'__ow_body'")
    if not isinstance(data, dict):
        raise InvalidInput("'__ow_body' must hold a JSON object")
    return {**params, **data}




OPENWHISK_OFF = ("/init and /run are off in this deployment (serving.openwhisk is false; it is off by "
                 "default on Knative); use POST /predict, /v2 or /v1 instead.")


def admit_init(state) -> None:
    """Before /init's body is read: refused when OpenWhisk routes are off or it already ran,
    so a refused /init costs no memory."""
    if not state.serving.serves_openwhisk():
        raise NotFound(OPENWHISK_OFF)
    if state.action.initialized:
        raise Forbidden("Cannot initialize the action more than once.")


def admit_run(state) -> None:
    if not state.serving.serves_openwhisk():
        raise NotFound(OPENWHISK_OFF)


def init_route(state, req, params) -> Response:
    return state.action.init(req.json(allow_empty=True))


def run_route(state, req, params) -> Response:
    body = req.json()
    try:  # web activations carry the caller's headers; non-web ones come from the platform (mlfn_runtime.auth)
        caller = state.auth.admit_activation(body, state.function)
    except Denied as d:
        _end_of_activation()
        return Response(200, d.web_answer())
    return state.auth.counted(caller, state.action.run(body))
