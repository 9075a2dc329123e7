"""Typed errors of the function runtime, mapped to HTTP status codes in one place.

Data-plane code raises these; the protocol handlers (mlfn_runtime.server) turn them into
`{"error": "..."}` bodies with `status_of(exc)`. Anything else is an internal error (500,
traceback logged)."""
from __future__ import annotations


class RuntimeFunctionError(Exception):
    """Base of the runtime's own errors; `status` is the HTTP status code."""

    status = 500


class InvalidInput(RuntimeFunctionError, ValueError):
    """The request is malformed: bad JSON, not an image, wrong shape/dtype, NaN/Inf."""

    status = 400


class NotFound(RuntimeFunctionError, LookupError):
    """An unknown model, route or output name."""

    status = 404


class MethodNotAllowed(RuntimeFunctionError):
    status = 405


class Forbidden(RuntimeFunctionError):
    """E.g. a second OpenWhisk /init."""

    status = 403


class PayloadTooLarge(RuntimeFunctionError):
    """The request body is larger than serving.max_payload_bytes."""

    status = 413


class NotReady(RuntimeFunctionError):
    """The function is not loaded yet, or is shutting down."""

    status = 503


class CustomStepError(RuntimeFunctionError):
    """A user's custom step raised; the message names its file and line.

    A `ValueError` raised by the user's code is the user's way to reject input (400);
    anything else is a bug in the step (500)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


class ConfigurationError(RuntimeFunctionError):
    """function.json (or a file it names) is wrong; raised at load time."""

    status = 500


def status_of(exc: BaseException) -> int:
    """The HTTP status code for an exception (500 for anything unexpected)."""
    return getattr(exc, "status", 500) if isinstance(exc, RuntimeFunctionError) else 500
