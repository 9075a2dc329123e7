"""API keys as the function sees them: a key set of hashed keys, read from a file that the
platform mounts (a Kubernetes Secret, the local controller's state folder) or from a JSON
value the platform passes (OpenWhisk package parameters), and re-read when it changes.

The key set document (written by `mlfn keys`; never holds a key, only its sha256):

    {"keys": [{"id": "k3f9a1c2", "sha256": "<hex of sha256(key)>",
               "scopes": ["digits:predict", "*:metadata"],
               "expires": 1790000000,          # unix seconds, optional
               "rate": "20/s", "burst": 20}],  # optional token bucket
     "jwks": {"keys": [...]},                  # optional: JWT public keys, rotated with the keys
     "jwt": {"issuer": ..., "audience": ...}}  # optional: overrides function.json's auth.jwt

A scope is `MODEL:ROUTE`; MODEL or ROUTE may be `*`. Routes: predict, infer, metadata,
metrics (and `init`, only ever granted by name). Keys are random 256-bit strings, so one
sha256 is the right hash (no salt or stretching is needed for high-entropy secrets); the
lookup is by digest and the stored digest is compared with `hmac.compare_digest`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mlfn_runtime.runtime_log import log

ROUTE_SCOPES = ("predict", "infer", "metadata", "metrics")
KEY_PREFIX = "mlfn_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_rate(text: str) -> float:
    """'20/s', '600/m', '1000/h' -> tokens per second; ValueError naming the text."""
    try:
        count, _, unit = str(text).partition("/")
        per = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit.strip() or "s"]
        value = float(count) / per
    except (KeyError, ValueError):
        raise ValueError(f"rate {text!r} is not COUNT/s, COUNT/m or COUNT/h") from None
    if not value > 0:
        raise ValueError(f"rate {text!r} must be positive")
    return value


def scope_allows(scopes: tuple, model: str, route: str) -> bool:
    """True when one of `scopes` (MODEL:ROUTE, `*` wildcards) grants `route` on `model`."""
    for scope in scopes:
        m, _, r = scope.partition(":")
        if m not in ("*", model):
            continue
        if r == route or (r in ("*", "") and route in ROUTE_SCOPES):
            return True
    return False


@dataclass(frozen=True)
class KeyRecord:
    id: str
    digest: bytes  # sha256 of the key
    scopes: tuple
    expires: Optional[float] = None
    rate: Optional[float] = None  # tokens per second
    burst: Optional[float] = None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class KeySet:
    by_digest: dict = field(default_factory=dict)  # digest bytes -> KeyRecord
    jwks: Optional[dict] = None
    jwt: Optional[dict] = None  # JWT settings kept on the platform (mlfn_runtime.jwt_verify.JwtSettings keys)

    def find(self, key: str) -> Optional[KeyRecord]:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        record = self.by_digest.get(digest)
        if record is not None and hmac.compare_digest(record.digest, digest):
            return record
        return None


def _record(entry: Any, i: int) -> KeyRecord:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not isinstance(entry.get("sha256"), str):
        raise ValueError(f"keys[{i}] needs a string 'id' and a hex 'sha256'")
    scopes = entry.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError(f"keys[{i}] ({entry['id']}): 'scopes' must be a list of MODEL:ROUTE strings")
    rate = entry.get("rate")
    rate = parse_rate(rate) if rate else None
    burst = entry.get("burst")
    expires = entry.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise ValueError(f"keys[{i}] ({entry['id']}): 'expires' must be unix seconds")
    return KeyRecord(entry["id"], bytes.fromhex(entry["sha256"]), tuple(scopes), expires, rate,
                     float(burst) if burst else (max(1.0, rate) if rate else None))


def parse_key_set(data: Any) -> KeySet:
    """A KeySet from the document above (a dict, or JSON text); ValueError when malformed."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise ValueError("the key set must be a JSON object with 'keys'")
    keys = data.get("keys") or []
    if not isinstance(keys, list):
        raise ValueError("'keys' must be a list")
    records = [_record(e, i) for i, e in enumerate(keys)]
    jwks = data.get("jwks")
    if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
        raise ValueError("'jwks' must be a JSON Web Key Set {\"keys\": [...]}")
    jwt = data.get("jwt")
    if jwt is not None and not isinstance(jwt, dict):
        raise ValueError("'jwt' must be an object of JWT settings")
    return KeySet({r.digest: r for r in records}, jwks, jwt)


class WatchedFile:
    """A parsed file, re-read when its inode, mtime or size change, checked at most every
    `interval` seconds. A file that cannot be parsed keeps the last good value (a write in
    progress) and is logged by path only; a missing file gives `missing`."""

    def __init__(self, path: str, parse: Callable[[bytes], Any], interval: float, missing: Any = None):
        self.path, self.parse, self.interval, self.missing = path, parse, interval, missing
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._stamp: Optional[tuple] = None
        self._value = missing

    def current(self) -> Any:
        now = time.monotonic()
        if now - self._checked < self.interval:
            return self._value
        with self._lock:
            if now - self._checked >= self.interval:
                self._refresh()
                self._checked = time.monotonic()
        return self._value

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._value = None, self.missing
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            with open(self.path, "rb") as f:
                self._value = self.parse(f.read())
            self._stamp = stamp
        except (OSError, ValueError) as e:
            log(f"auth: {self.path} cannot be read ({e.__class__.__name__}); keeping the previous key set")


class InlineKeySets:
    """Key sets passed as JSON values (OpenWhisk package parameters), parsed once per value."""

    def __init__(self):
        self._raw: Optional[str] = None
        self._value = KeySet()

    def parse(self, raw: Any) -> KeySet:
        text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
        if text != self._raw:
            self._value, self._raw = parse_key_set(text), text
        return self._value
