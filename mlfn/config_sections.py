"""The mlfn.yaml sections of progressive delivery (`rollout:`) and of the function's
authentication (`auth:`); mlfn.config holds the rest of the schema and re-exports these."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mlfn.errors import ConfigError

CONFIG_FILE = "mlfn.yaml"
JWT_ALGORITHMS = ("RS256", "ES256", "EdDSA", "HS256")


@dataclass
class RolloutConfig:
    """`mlfn rollout` / `mlfn deploy --rollout` defaults (flags win); see mlfn.rollout.settings."""

    steps: Optional[str] = None  # e.g. "10,25,50,100"
    interval: Optional[str] = None  # e.g. "60s"
    max_error_rate: Optional[str] = None  # e.g. "1%"
    max_p99: Optional[str] = None  # e.g. "250ms"
    min_requests: Optional[int] = None
    failures: Optional[int] = None
    max_wait: Optional[str] = None  # e.g. "10m"
    alias: Optional[str] = None
    probe: Optional[str] = None  # .npz (x, y) or an image folder with label sub-folders
    max_accuracy_drop: Optional[float] = None  # accuracy points (MSE for regression)
    min_agreement: Optional[str] = None  # e.g. "98%" (probe without labels)
    load: Optional[str] = None  # folder of inputs for synthetic load
    rate: Optional[float] = None  # synthetic requests per second
    pre_step: Optional[str] = None  # shell command before each traffic increase
    post_step: Optional[str] = None  # shell command after each traffic increase
    prometheus: Optional[str] = None  # Prometheus URL (Knative)
    queries: dict = field(default_factory=dict)  # PromQL templates: requests, errors, p99
    compare_stable: Optional[bool] = None  # thresholds bound how much worse than stable (same window)


@dataclass
class JwtConfig:
    """JWT / OIDC access tokens the function accepts (verified offline; PyJWT goes into the image)."""

    algorithms: list = field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])  # and/or HS256
    issuer: Optional[str] = None  # required `iss`
    audience: Optional[str] = None  # required `aud`
    leeway: int = 30  # seconds of clock skew allowed on exp/nbf
    scope_claim: str = "scope"  # claim holding MODEL:ROUTE scopes (space-separated string or list)
    jwks_file: Optional[str] = None  # JWKS path inside the container (else the key set's jwks, else jwks_env)
    jwks_env: str = "MLFN_JWKS"  # environment variable holding a JWKS
    hs256_secret_env: Optional[str] = None  # environment variable holding the HS256 secret
    rate: Optional[str] = None  # per token subject, e.g. 20/s
    burst: Optional[int] = None


@dataclass
class AuthConfig:
    """API keys and tokens demanded by the function (keys: `mlfn keys`; kept on the platform)."""

    enabled: bool = False
    reload_seconds: int = 5  # the mounted key set is re-read at most this often: the rotation bound
    open: list = field(default_factory=lambda: ["metrics", "openapi"])  # route scopes needing no credential
    secret: Optional[str] = None  # Knative: the Secret holding keys.json; default <name>-mlfn-auth
    jwt: Optional[JwtConfig] = None


def check_auth(auth: AuthConfig, source) -> None:
    """ConfigError naming the key and the file for an auth section that cannot work."""
    bad = [s for s in auth.open if s not in ("metrics", "openapi", "metadata", "predict", "infer")]
    if bad:
        raise ConfigError(f"auth.open in {source or CONFIG_FILE} holds {bad[0]!r}; choose from metrics, openapi, "
                          "metadata, predict, infer.")
    if auth.reload_seconds < 1:
        raise ConfigError(f"auth.reload_seconds in {source or CONFIG_FILE} must be at least 1.")
    for alg in (auth.jwt.algorithms if auth.jwt else []):
        if alg not in JWT_ALGORITHMS:
            raise ConfigError(f"auth.jwt.algorithms in {source or CONFIG_FILE} is {alg!r}; choose one of: "
                              f"{', '.join(JWT_ALGORITHMS)}.")
