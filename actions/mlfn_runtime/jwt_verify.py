"""JWT / OIDC access tokens (compact JWS), verified offline with `cryptography` (imported
only when function.json configures `auth.jwt`; the API-key path never loads it). PyJWT is
not used inside the image: its package imports `ssl`, which the slim base image does not
ship; the tests sign their tokens with PyJWT, an independent implementation.

- RS256, ES256, EdDSA against a JWKS: the key set document's `jwks`, a file
  (`auth.jwt.jwks_file`, re-read when it changes) or an environment variable holding the
  JSON (`auth.jwt.jwks_env`, MLFN_JWKS by default). No network fetch at request time.
- HS256 with a secret from the environment variable `auth.jwt.hs256_secret_env`.
- The header's `alg` must be one of the configured algorithms (never `none`) and must fit
  the key: a JWK is only ever used with its own algorithm, so an HS256 token "signed" with
  an RSA public key is refused; an unknown `kid` is refused.
- `exp` is required; `exp`, `nbf`, `iss` and `aud` are checked with `leeway` seconds.
- Verified tokens are cached (bounded) until they expire; the cache is dropped when the
  JWKS changes, so a removed key stops working at the next reload.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Optional

ASYMMETRIC = ("RS256", "ES256", "EdDSA")
CACHE_SIZE = 4096
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(Exception):
    """The token is not acceptable; the message names why, never the token."""


@dataclass(frozen=True)
class JwtSettings:
    algorithms: tuple = ASYMMETRIC
    issuer: Optional[str] = None
    audience: Optional[str] = None
    leeway: float = 30.0
    scope_claim: str = "scope"
    jwks_file: Optional[str] = None
    jwks_env: str = "MLFN_JWKS"
    hs256_secret_env: Optional[str] = None
    rate: Optional[float] = None  # per subject, tokens per second
    burst: Optional[float] = None

    @classmethod
    def from_dict(cls, data: dict) -> "JwtSettings":
        from mlfn_runtime.api_keys import parse_rate

        algs = tuple(data.get("algorithms") or ASYMMETRIC)
        bad = [a for a in algs if a not in ASYMMETRIC + ("HS256",)]
        if bad:
            raise ValueError(f"auth.jwt.algorithms holds {bad[0]!r}; choose from RS256, ES256, EdDSA, HS256")
        rate = parse_rate(data["rate"]) if data.get("rate") else None
        return cls(algs, data.get("issuer"), data.get("audience"), float(data.get("leeway", 30)),
                   data.get("scope_claim") or "scope", data.get("jwks_file"), data.get("jwks_env") or "MLFN_JWKS",
                   data.get("hs256_secret_env"), rate, float(data["burst"]) if data.get("burst") else None)


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    scopes: tuple
    expires: float
    not_before: float


class JwtVerifier:
    def __init__(self, settings: JwtSettings):
        import cryptography  # noqa: F401 - fail at start-up, not at the first request, when it is missing

        self.settings = settings
        self._lock = threading.Lock()
        self._cache: dict = {}
        self._jwks_identity: Optional[str] = None
        self._jwks_ref: Optional[dict] = None
        self._env_raw: Optional[str] = None
        self._env_jwks: Optional[dict] = None
        self._keys: dict = {}  # (kid, alg) -> PyJWK
        self._jwks_file = None
        if settings.jwks_file:
            from mlfn_runtime.api_keys import WatchedFile

            self._jwks_file = WatchedFile(settings.jwks_file, json.loads, 2.0)

    def jwks(self, from_key_set: Optional[dict]) -> Optional[dict]:
        """The key set's JWKS, else the file's, else the environment variable's."""
        if from_key_set:
            return from_key_set
        if self._jwks_file is not None:
            found = self._jwks_file.current()
            if found:
                return found
        raw = os.environ.get(self.settings.jwks_env)
        if raw != self._env_raw:  # parsed once per value (/init may set it)
            self._env_raw, self._env_jwks = raw, json.loads(raw) if raw else None
        return self._env_jwks

    def verify(self, token: str, jwks: Optional[dict]) -> TokenClaims:
        now = time.time()
        self._use_jwks(jwks)
        hit = self._cache.get(token)
        if hit is not None:
            if now > hit.expires + self.settings.leeway:
                raise TokenError("the token has expired")
            if now < hit.not_before - self.settings.leeway:
                raise TokenError("the token is not valid yet")
            return hit
        claims = self._decode(token, jwks)
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = claims
        return claims

    def _use_jwks(self, jwks: Optional[dict]) -> None:
        """A changed JWKS (a new object: the key set or file was re-read) drops the caches
        when its content differs."""
        if jwks is self._jwks_ref:
            return
        identity = json.dumps(jwks, sort_keys=True) if jwks else ""
        with self._lock:
            if identity != self._jwks_identity:
                self._cache, self._keys, self._jwks_identity = {}, {}, identity
            self._jwks_ref = jwks

    def _decode(self, token: str, jwks: Optional[dict]) -> TokenClaims:
        s = self.settings
        header, claims, signing_input, signature = _split(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in s.algorithms:
            raise TokenError("the token's algorithm is not accepted")
        if alg == "HS256":
            expected = hmac.new(self._secret(), signing_input, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, signature):
                raise TokenError("the token's signature does not verify")
        else:
            _verify(self._public_key(header.get("kid"), alg, jwks), alg, signing_input, signature)
        self._check_claims(claims)
        return self._claims(claims)

    def _check_claims(self, claims: dict) -> None:
        s, now = self.settings, time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not _is_number(exp) or not _is_number(nbf):
            raise TokenError("the token needs a numeric 'exp' (and 'nbf', when present)")
        if now > exp + s.leeway:
            raise TokenError("the token has expired")
        if now < nbf - s.leeway:
            raise TokenError("the token is not valid yet")
        if s.issuer is not None and claims.get("iss") != s.issuer:
            raise TokenError("the token was issued by or for someone else (iss/aud)")
        if s.audience is not None:
            aud = claims.get("aud")
            if s.audience != aud and not (isinstance(aud, list) and s.audience in aud):
                raise TokenError("the token was issued by or for someone else (iss/aud)")

    def _claims(self, claims: dict) -> TokenClaims:
        raw = claims.get(self.settings.scope_claim)
        scopes = tuple(raw.split()) if isinstance(raw, str) else tuple(x for x in raw or () if isinstance(x, str))
        sub = claims.get("sub")
        return TokenClaims(sub if isinstance(sub, str) else "", scopes, float(claims["exp"]),
                           float(claims.get("nbf") or 0))

    def _secret(self) -> bytes:
        name = self.settings.hs256_secret_env
        secret = os.environ.get(name) if name else None
        if not secret:
            raise TokenError("HS256 tokens are not accepted here (no secret is configured)")
        return secret.encode()

    def _public_key(self, kid, alg: str, jwks: Optional[dict]):
        entries = [k for k in (jwks or {}).get("keys", []) if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        if kid is not None:
            entries = [k for k in entries if k.get("kid") == kid]
        elif len(entries) != 1:
            entries = []  # no kid: only a single-key set says which key
        if not entries:
            raise TokenError("the token's key (kid) is not known")
        cached = self._keys.get((kid, alg))
        if cached is None:
            cached = self._keys[(kid, alg)] = _jwk_public_key(entries[0], alg)
        return cached


def _b64(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise TokenError("the token is malformed")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _split(token: str) -> tuple:
    """(header, claims, signing input, signature) of a compact JWS; TokenError when malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("the token is malformed")
    try:
        header, claims = json.loads(_b64(parts[0])), json.loads(_b64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("the token is malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("the token is malformed")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), _b64(parts[2])


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _jwk_public_key(jwk: dict, alg: str):
    """The public key of a JWK, only for the one algorithm its type fits (no confusion)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    fits = {"RS256": ("RSA", None), "ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}[alg]
    if (jwk.get("kty"), jwk.get("crv")) != fits or jwk.get("alg") not in (None, alg):
        raise TokenError("the token's algorithm does not fit its key")
    try:
        if alg == "RS256":
            key = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
            if key.key_size < 2048:
                raise ValueError("RSA key under 2048 bits")
            return key
        if alg == "ES256":
            return ec.EllipticCurvePublicNumbers(_int(jwk["x"]), _int(jwk["y"]), ec.SECP256R1()).public_key()
        return ed25519.Ed25519PublicKey.from_public_bytes(_b64(jwk["x"]))
    except (KeyError, ValueError, TypeError, TokenError):
        raise TokenError("the token's key (kid) is not usable") from None


def _int(segment: str) -> int:
    return int.from_bytes(_b64(segment), "big")


def _verify(key, alg: str, signing_input: bytes, signature: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        if alg == "RS256":
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256":
            if len(signature) != 64:
                raise InvalidSignature()
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, signing_input)
    except InvalidSignature:
        raise TokenError("the token's signature does not verify") from None
