"""What protocol handlers take and give: `Request` (decoded HTTP request) and `Response`
(status, body, headers, and the model it concerned, for metrics); `encode_json` writes a
body (NaN/Inf become null: JSON has no such numbers). No protocol imports another."""
from __future__ import annotations

import json
import re
from typing import Any, Optional

import numpy as np

from mlfn_runtime.errors import InvalidInput, describe_error


class Request:
    """A decoded request: method, path, query, headers, body bytes (decompressed)."""

    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, method: str, path: str, query: dict, headers, body: bytes):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self, allow_empty: bool = False) -> Any:
        if not self.body:
            if allow_empty:
                return {}
            raise InvalidInput("the request body is empty; send a JSON object")
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the request body is not UTF-8 JSON (send images with Content-Type: image/*)") from None
        return parse_json(text, "the request body")


MAX_JSON_DEPTH = 64  # numpy arrays have at most 64 dimensions; no request shape needs more
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]], _BRACKET_STEP[[ord("]"), ord("}")]] = 1, -1
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def parse_json(text, what: str) -> Any:
    """json.loads with nesting bounded to MAX_JSON_DEPTH (a deeper document is a 400 naming
    `what`, not a RecursionError); `text` is str or UTF-8 bytes."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{what} is not UTF-8 JSON") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"{what} nests JSON {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable after json_depth, kept as the last line of defence
        raise InvalidInput(f"{what} nests JSON too deeply") from None
    except ValueError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None


def json_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings do not count);
    a few milliseconds per MB: string bodies are cut out by a regex, the rest is counted
    with numpy."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the number of brackets it holds
    stripped = _JSON_STRING.sub("", text).encode("utf-8", "replace")
    steps = _BRACKET_STEP[np.frombuffer(stripped, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


class Response:
    """`body`: bytes as they are, anything else as JSON."""

    __slots__ = ("status", "body", "headers", "model")

    def __init__(self, status: int = 200, body: Any = None, headers: Optional[dict] = None, model: str = ""):
        self.status, self.body, self.headers, self.model = status, body, headers or {}, model


def error_response(exc: BaseException, where: str) -> Response:
    """`{"error": ...}` with the status `errors.describe_error` gives `exc`."""
    status, message = describe_error(exc, where)
    return Response(status, {"error": message})


def encode_json(obj) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # NaN/Inf in a model output: JSON has no such numbers
        return json.dumps(_nan_to_none(obj), separators=(",", ":")).encode()


def _nan_to_none(x):
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x
