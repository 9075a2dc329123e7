"""Typed errors of the function runtime, mapped to HTTP status codes in one place.

Data-plane code raises these; every protocol turns any exception into (status, message)
with `describe_error` here and encodes that its own way (`{"error": ...}` with that status
over HTTP; a 200 application error or a 502 developer error for OpenWhisk /run; the web
action's statusCode). Anything that is not a RuntimeFunctionError is an internal error
(500, traceback logged)."""
from __future__ import annotations

import re

from mlfn_runtime.runtime_log import log


class RuntimeFunctionError(Exception):
    """Base of the runtime's own errors; `status` is the HTTP status code."""

    status = 500


class InvalidInput(RuntimeFunctionError, ValueError):
    """The request is malformed: bad JSON, not an image, wrong shape/dtype, NaN/Inf."""

    status = 400


class BatchTooLarge(InvalidInput):
    """A request holds more inputs than serving.max_batch_size (gRPC: RESOURCE_EXHAUSTED)."""


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
    return exc.status if isinstance(exc, RuntimeFunctionError) else 500


def describe_error(exc: BaseException, where: str) -> tuple:
    """(HTTP status, message for the client) of `exc`; 5xx are logged with `where` (the
    traceback too when the error is not one of the runtime's own)."""
    status = status_of(exc)
    if isinstance(exc, RuntimeFunctionError):
        if status >= 500:
            log(f"{where}: {exc}")
        return status, without_addresses(str(exc))
    import traceback  # lazy: only errors pay for it

    log(f"{where} failed:\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()}")
    return 500, without_addresses(f"internal error: {exc.__class__.__name__}: {exc}")


_OBJECT_AT = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def without_addresses(message: str) -> str:
    """`<_io.BytesIO object at 0x7f...>` -> `<_io.BytesIO object>`: clients never see heap
    addresses (they say nothing useful and leak the process's memory layout)."""
    return _OBJECT_AT.sub(r"<\1 object>", message)
