"""The OpenWhisk action protocol: `POST /init` once, then `POST /run` per activation.

What the invoker sends and how it reads the answers (../shared/specs/README.md):
- /init `{"value": {"name", "main", "binary", "code"?, "env": {...}}}`; `env` values become
  environment variables before anything runs. Without `code` this is a docker action: the
  bundled model is served. With `code` (Python source with `main`, or a base64 zip with
  `__main__.py` when `binary` is true) that code's `main(params)` runs instead.
  A second /init is refused with 403.
- /run `{"value": ..., "namespace", "action_name", "activation_id", "deadline": "<ms>", ...}`;
  every key but `value` is exposed as `__OW_<KEY>` for the duration of the activation.
- 200 + object = success; 200 + `{"error"}` = application error (bad input);
  non-200 = developer error (a bug, or a broken model); 503 while shutting down.
- Web actions (`__ow_method` in the value): the request is read from `__ow_body`
  (base64 for binary or raw-http bodies) and the answer is `{statusCode, headers, body}`.
- After every activation `XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX` is printed on stdout and stderr.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
import sys
import threading
import types
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl

from mlfn_runtime.errors import InvalidInput, RuntimeFunctionError, status_of

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
_current = None


def current_function():
    """The bundled Function (None when the image has none): code actions may call
    `current_function().predict({...})` to use the model in-process."""
    return _current


class ActionProxy:
    """State of the OpenWhisk side of one container."""

    def __init__(self, function=None, log: Callable[[str], None] = None):
        global _current
        self.function = _current = function
        self.log = log or (lambda m: sys.stderr.write(m + "\n"))
        self.initialized = False
        self.main: Optional[Callable] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ /init
    def init(self, body: Any) -> tuple:
        with self._lock:
            if self.initialized:
                return 403, {"error": "Cannot initialize the action more than once."}
            value = body.get("value") if isinstance(body, dict) else None
            if value is None:
                value = {}
            if not isinstance(value, dict):
                return 400, {"error": "The /init body must be {\"value\": {...}}."}
            env = value.get("env") or {}
            if not isinstance(env, dict):
                return 400, {"error": "value.env in /init must be an object of strings."}
            env = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}
            bad = [k for k, v in env.items() if not k or "=" in k or "\0" in k or "\0" in v]
            if bad:
                return 400, {"error": f"value.env in /init holds {bad[0]!r}, which cannot be an environment variable."}
            os.environ.update(env)
            code = value.get("code")
            if code:
                try:
                    self.main = load_action(code, bool(value.get("binary")), value.get("main") or "main")
                except Exception as e:  # the user's code: report, do not crash
                    self.log(_traceback())
                    self._end_of_activation()
                    return 502, {"error": f"Initialization has failed: {e}"}
            elif self.function is None:
                self._end_of_activation()
                return 502, {"error": "The image holds no function (no function.json) and /init sent no code."}
            self.initialized = True
            self._end_of_activation()
            return 200, {"ok": True}

    # ------------------------------------------------------------------ /run
    def run(self, body: Any) -> tuple:
        if not isinstance(body, dict):
            return 400, {"error": "The /run body must be a JSON object with 'value'."}
        if self.main is None and self.function is None:
            return 502, {"error": "The action is not initialized."}
        value = body.get("value", {})
        saved = {}
        for k, v in body.items():
            if k == "value":
                continue
            key = "__OW_" + str(k).upper()
            saved[key] = os.environ.get(key)
            os.environ[key] = v if isinstance(v, str) else json.dumps(v)
        try:
            if self.main is not None:
                return self._run_code(value)
            if isinstance(value, dict) and "__ow_method" in value:
                return 200, self._run_web(value)
            return self._run_model(value)
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
            self._end_of_activation()

    def _run_code(self, value) -> tuple:
        try:
            result = self.main(value)
        except Exception as e:
            self.log(_traceback())
            return 502, {"error": f"An error has occurred (see logs for details): {e.__class__.__name__}: {e}"}
        if not isinstance(result, (dict, list)):
            return 502, {"error": "The action did not return a dictionary or an array."}
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            return 502, {"error": "The action returned a result that is not JSON serializable."}
        return 200, result

    def _run_model(self, value) -> tuple:
        try:
            return 200, self.function.predict(value)
        except RuntimeFunctionError as e:
            code = status_of(e)
            if code < 500:
                return 200, {"error": str(e)}  # application error: the caller sent bad input
            self.log(f"error: {e}")
            return 502, {"error": str(e)}
        except Exception as e:
            self.log(_traceback())
            return 502, {"error": f"internal error: {e.__class__.__name__}: {e}"}

    def _run_web(self, value: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        try:
            request = web_request(value)
            return {"statusCode": 200, "headers": headers, "body": self.function.predict(request)}
        except RuntimeFunctionError as e:
            if status_of(e) >= 500:
                self.log(f"error: {e}")
            return {"statusCode": status_of(e), "headers": headers, "body": {"error": str(e)}}
        except Exception as e:
            self.log(_traceback())
            return {"statusCode": 500, "headers": headers, "body": {"error": f"internal error: {e.__class__.__name__}: {e}"}}

    @staticmethod
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
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"'__ow_body' is not JSON or an image: {e}") from None
    if not isinstance(data, dict):
        raise InvalidInput("'__ow_body' must hold a JSON object")
    return {**params, **data}


def load_action(code: str, binary: bool, main: str) -> Callable:
    """Python source, or a base64 zip holding `__main__.py` -> its `main` function."""
    if binary:
        try:
            data = base64.b64decode(code, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the code is marked binary but is not valid base64") from None
        import zipfile

        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise ValueError("the binary code is not a zip archive") from None
        import tempfile

        root = tempfile.mkdtemp(prefix="mlfn-action-")
        archive.extractall(root)
        entry = os.path.join(root, "__main__.py")
        if not os.path.isfile(entry):
            raise ValueError("the zip archive has no __main__.py at its top level")
        sys.path.insert(0, root)
        with open(entry, encoding="utf-8") as f:
            source, filename = f.read(), entry
    else:
        source, filename = code, "__main__.py"
    module = types.ModuleType("action")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    fn = module.__dict__.get(main)
    if not callable(fn):
        raise ValueError(f"the code has no function '{main}'")
    sys.modules["action"] = module
    return fn
