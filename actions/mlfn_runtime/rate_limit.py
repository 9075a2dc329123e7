"""Token buckets per caller (an API key id or a JWT subject): `rate` tokens per second up
to `burst`; a request takes one token, or gets the seconds to wait for the next one."""
from __future__ import annotations

import math
import threading
import time
from typing import Optional


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per caller id; a changed rate (a rotated key set) starts a new bucket."""

    MAX_BUCKETS = 100_000

    def __init__(self):
        self._buckets: dict = {}
        self._lock = threading.Lock()

    def wait_seconds(self, caller: str, rate: Optional[float], burst: Optional[float]) -> int:
        """0 when the request may run; else the Retry-After seconds (at least 1)."""
        if not rate:
            return 0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None or bucket.rate != rate or bucket.burst != burst:
                if len(self._buckets) >= self.MAX_BUCKETS:
                    self._buckets.clear()
                bucket = self._buckets[caller] = TokenBucket(rate, burst or max(1.0, rate))
            wait = bucket.take(now)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
