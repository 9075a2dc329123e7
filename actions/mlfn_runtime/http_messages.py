"""What protocol handlers take and give: `Request` (decoded HTTP request) and `Response`
(status, body, headers, and the model it concerned, for metrics); `encode_json` writes a
body (NaN/Inf become null: JSON has no such numbers). No protocol imports another."""
from __future__ import annotations

import json
from typing import Any, Optional

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
            return json.loads(self.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput("the request body is not UTF-8 JSON (send images with Content-Type: image/*)") from None
        except ValueError as e:
            raise InvalidInput(f"the request body is not valid JSON: {e}") from None


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
