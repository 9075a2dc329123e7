"""What a dry run would send: a list of requests that the platform clients' dry-run
wrappers fill (writes are recorded, never sent; secrets are redacted)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class Recorder:
    requests: list = field(default_factory=list)  # [{"method", "url", "body"}]

    def add(self, method: str, url: str, body: Any) -> None:
        self.requests.append({"method": method, "url": url, "body": body})


def redact(body: Any, secret_keys: Iterable[str]) -> Any:
    """body with the values of secret {"key": K, "value": V} items replaced by "***" (a
    boolean stays: `require-whisk-auth: true` names no secret)."""
    keys = frozenset(secret_keys)
    if isinstance(body, dict):
        if body.get("key") in keys and isinstance(body.get("value"), (str, dict, list)):
            return {**body, "value": "***"}
        return {k: redact(v, keys) for k, v in body.items()}
    if isinstance(body, list):
        return [redact(i, keys) for i in body]
    return body
