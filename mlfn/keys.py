"""API keys of a deployed function, kept on the platform (never in the image):
`create_key` makes a random key, stores only its sha256 with an id, scopes, an optional
expiry and rate, and returns the key once; `list_keys` and `revoke_key` work on the
stored set. The document is the one `mlfn_runtime.api_keys` reads; where it lives is the
target's business (`Target.read_key_set` / `write_key_set`): OpenWhisk and the local
controller bind it to the function's package as the parameter `mlfn_auth` (each
activation reads it: a change applies to the next activation); Knative reads it from the
Secret mounted at /var/run/mlfn/auth (kubelet refresh + `auth.reload_seconds`).
`set_jwt` keeps JWT settings and the public JWKS in the same document."""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Optional

from mlfn.errors import ConfigError, NotFoundError

ROUTES = ("predict", "infer", "metadata", "metrics", "init", "*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class KeyInfo:
    """What is known of a key, never the key or its hash. `last_used` is None: the platforms
    mlfn targets do not record it per key (the function's /metrics counts per key id)."""

    id: str
    scopes: list
    created: Optional[int] = None
    expires: Optional[int] = None
    rate: Optional[str] = None
    burst: Optional[int] = None
    expired: bool = False
    last_used: Optional[int] = None


@dataclass
class CreatedKey:
    function: str
    key: str  # shown once
    info: KeyInfo = field(default_factory=lambda: KeyInfo("", []))


def parse_duration(text: str) -> int:
    """'90d', '12h', '30m', '2w', '3600s' -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(text))
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"--expires {text!r} is not a duration like 90d, 12h, 30m or 2w.")
    return int(m.group(1)) * _UNITS[m.group(2)]


def check_scope(scope: str) -> str:
    model, sep, route = scope.partition(":")
    if scope != "*" and (not sep or not model or route not in ROUTES):
        raise ConfigError(f"--scope {scope!r} is not MODEL:ROUTE (ROUTE one of {', '.join(ROUTES)}; "
                          "MODEL a model name or *), e.g. digits:predict.")
    return scope


def check_rate(rate: Optional[str]) -> Optional[str]:
    if rate is None:
        return None
    from mlfn_runtime.api_keys import parse_rate

    try:
        parse_rate(rate)
    except ValueError:
        raise ConfigError(f"--rate {rate!r} is not COUNT/s, COUNT/m or COUNT/h, e.g. 20/s.") from None
    return rate


def _info(entry: dict, now: float) -> KeyInfo:
    expires = entry.get("expires")
    return KeyInfo(entry["id"], list(entry.get("scopes") or []), entry.get("created"), expires, entry.get("rate"),
                   entry.get("burst"), expires is not None and now >= expires)


def create_key(target, function: str, scopes: list, expires: Optional[str] = None, rate: Optional[str] = None,
               burst: Optional[int] = None) -> CreatedKey:
    """A new key for `function` on `target`; the returned key is not stored anywhere."""
    from mlfn_runtime.api_keys import KEY_PREFIX, hash_key

    if not scopes:
        raise ConfigError("Give at least one --scope MODEL:ROUTE, e.g. --scope digits:predict.")
    scopes = [check_scope(s) for s in scopes]
    now = int(time.time())
    entry = {"id": "k" + secrets.token_hex(4), "scopes": scopes, "created": now}
    if expires:
        entry["expires"] = now + parse_duration(expires)
    if check_rate(rate):
        entry["rate"] = rate
        if burst:
            entry["burst"] = int(burst)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry["sha256"] = hash_key(key)
    doc = dict(target.read_key_set(function))
    doc["keys"] = list(doc.get("keys") or []) + [entry]
    target.write_key_set(function, doc)
    return CreatedKey(function, key, _info(entry, now))


def list_keys(target, function: str) -> list:
    now = time.time()
    return [_info(e, now) for e in target.read_key_set(function).get("keys") or []]


def revoke_key(target, function: str, key_id: str) -> KeyInfo:
    doc = dict(target.read_key_set(function))
    keys = list(doc.get("keys") or [])
    gone = [e for e in keys if e.get("id") == key_id]
    if not gone:
        raise NotFoundError(f"Function '{function}' has no key '{key_id}'; 'mlfn keys list {function}' shows its keys.")
    doc["keys"] = [e for e in keys if e.get("id") != key_id]
    target.write_key_set(function, doc)
    return _info(gone[0], time.time())


JWT_KEYS = ("issuer", "audience", "algorithms", "scope_claim", "leeway", "rate", "burst")


def set_jwt(target, function: str, settings: dict, jwks_path: Optional[str] = None) -> dict:
    """Keep JWT settings (issuer, audience, ... over function.json's auth.jwt) and the JWKS
    on the platform, beside the key set; returns what is stored now (public data only)."""
    import json

    from mlfn_runtime.jwt_verify import JwtSettings

    settings = {k: v for k, v in settings.items() if k in JWT_KEYS and v not in (None, (), [])}
    try:
        JwtSettings.from_dict(settings)
    except ValueError as e:
        raise ConfigError(f"{e}.") from None
    doc = dict(target.read_key_set(function))
    doc["jwt"] = {**(doc.get("jwt") or {}), **settings}
    if jwks_path:
        try:
            jwks = json.loads(open(jwks_path, encoding="utf-8").read())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--jwks {jwks_path} cannot be read as JSON: {e}.") from None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or \
                any("d" in k or "k" in k for k in jwks["keys"] if isinstance(k, dict)):
            raise ConfigError(f"--jwks {jwks_path} must be a JWKS {{\"keys\": [...]}} of public keys only.")
        doc["jwks"] = jwks
    doc.setdefault("keys", [])
    target.write_key_set(function, doc)
    kids = [k.get("kid") for k in (doc.get("jwks") or {}).get("keys", [])]
    return {"function": function, "jwt": doc["jwt"], "jwks_kids": kids}
