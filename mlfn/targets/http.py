"""A small HTTP client with retries, shared by the platform REST clients.

Retries with exponential backoff (honouring `Retry-After`) on connection errors, read
timeouts, 429 and the 5xx codes a caller marks as transient. Non-idempotent calls (an
OpenWhisk invoke) pass a narrower `retry_statuses` so a request that may already have run
is not repeated. Secrets never appear in exceptions or logs: errors name the method and
the URL without credentials.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Iterable, Optional

from mlfn.errors import TargetError

log = logging.getLogger(__name__)

TRANSIENT = frozenset({429, 500, 502, 503, 504})


class HttpClient:
    """`requests.Session` plus retries. `sleep` is injectable for tests."""

    def __init__(self, *, auth: Optional[tuple] = None, verify: bool = True, timeout: float = 65.0,
                 attempts: int = 5, backoff: float = 0.2, max_backoff: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep, headers: Optional[dict] = None):
        import requests

        self._requests = requests
        self.session = requests.Session()
        self.session.auth = auth
        self.session.verify = verify
        self.session.headers.update({"User-Agent": "mlfn", **(headers or {})})
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        if not verify:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def request(self, method: str, url: str, *, retry_statuses: Iterable[int] = TRANSIENT,
                retry_connection: bool = True, timeout: Optional[float] = None, **kwargs: Any):
        """Send with retries; returns the last `requests.Response` (any status).

        Raises TargetError when the server cannot be reached after all attempts."""
        retry_statuses = frozenset(retry_statuses)
        req_exc = self._requests.exceptions
        last_error: Optional[Exception] = None
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
            except (req_exc.ConnectionError, req_exc.Timeout) as e:
                if isinstance(e, req_exc.SSLError):
                    raise TargetError(
                        f"TLS verification failed for {safe_url(url)}; pass --insecure for a self-signed certificate."
                    ) from None
                last_error = e
                if not retry_connection or attempt == self.attempts:
                    break
                self._wait(attempt, None, f"{method} {safe_url(url)}: {type(e).__name__}")
                continue
            if resp.status_code in retry_statuses and attempt < self.attempts:
                self._wait(attempt, resp.headers.get("Retry-After"), f"{method} {safe_url(url)}: HTTP {resp.status_code}")
                continue
            return resp
        raise TargetError(
            f"Cannot reach {safe_url(url)} ({type(last_error).__name__} after {self.attempts} attempts); "
            "check the API host and that the server is running."
        )

    def _wait(self, attempt: int, retry_after: Optional[str], why: str) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        delay *= 0.5 + random.random() / 2  # jitter
        if retry_after:
            try:
                delay = min(self.max_backoff * 4, float(retry_after))
            except ValueError:
                pass
        log.debug("retrying in %.2fs after %s", delay, why)
        self.sleep(delay)


def safe_url(url: str) -> str:
    """The URL without user:password@ and without the query string."""
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(url)
    netloc = p.hostname or ""
    if p.port:
        netloc += f":{p.port}"
    return urlunsplit((p.scheme, netloc, p.path, "", ""))
