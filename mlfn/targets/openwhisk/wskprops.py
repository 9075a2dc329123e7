"""OpenWhisk endpoint and credentials, found the way `wsk` finds them.

Order (later wins): `~/.wskprops` (or the file named by `WSK_CONFIG_FILE`), then the
environment (`__OW_API_HOST`, `__OW_API_KEY`, `__OW_NAMESPACE`, as inside an action), then
flags (`--apihost`, `--auth`, `--namespace`). An APIHOST without a scheme means https.
The AUTH key is kept out of `repr()` and of every message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mlfn.errors import ConfigError

# OpenWhisk standalone's well-known guest identity (public, documented upstream).
GUEST_AUTH = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
GUEST_NAMESPACE = "guest"
LOCAL_APIHOST = "http://127.0.0.1:3233"


@dataclass
class WskProps:
    apihost: Optional[str] = None
    auth: Optional[str] = field(default=None, repr=False)
    namespace: str = "_"
    insecure: bool = False
    source: Optional[str] = None  # where the values came from, for messages

    @property
    def base_url(self) -> str:
        if not self.apihost:
            raise ConfigError(
                "No OpenWhisk API host: set APIHOST in ~/.wskprops (wsk property set --apihost HOST) or pass --apihost."
            )
        host = self.apihost.rstrip("/")
        if "://" not in host:
            host = "https://" + host
        return host

    @property
    def credentials(self) -> tuple:
        if not self.auth:
            raise ConfigError(
                "No OpenWhisk credentials: set AUTH in ~/.wskprops (wsk property set --auth KEY) or pass --auth."
            )
        user, sep, key = self.auth.partition(":")
        if not sep or not user or not key:
            raise ConfigError(f"The OpenWhisk AUTH key from {self.source or 'the flags'} must look like 'uuid:key'.")
        return (user, key)


def props_path() -> Path:
    return Path(os.environ.get("WSK_CONFIG_FILE") or Path.home() / ".wskprops")


def read_props_file(path: Path) -> dict:
    """KEY=VALUE lines; blank lines and # comments ignored."""
    out = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    except OSError as e:
        raise ConfigError(f"Cannot read {path}: {e.strerror}.") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        out[k.strip().upper()] = v.strip()
    return out


def load_wskprops(apihost: Optional[str] = None, auth: Optional[str] = None, namespace: Optional[str] = None,
                  insecure: bool = False, path: Optional[Path] = None) -> WskProps:
    path = path or props_path()
    data = read_props_file(path)
    env = os.environ
    return WskProps(
        apihost=apihost or env.get("__OW_API_HOST") or data.get("APIHOST"),
        auth=auth or env.get("__OW_API_KEY") or data.get("AUTH"),
        namespace=namespace or env.get("__OW_NAMESPACE") or data.get("NAMESPACE") or "_",
        insecure=insecure or data.get("INSECURE", "").lower() in ("1", "true", "yes"),
        source=str(path) if data else None,
    )

