"""A small OCI distribution (registry HTTP API v2) client on `requests`.

Enough to push and pull images without a Docker daemon: blob existence checks, monolithic
blob uploads, manifest put/get. Authentication follows the registry's 401 challenge:
anonymous, HTTP basic, or a bearer token from the realm named in `WWW-Authenticate`
(with basic credentials when the user has some). Credentials come from the user's docker
config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: `auths` entries and
`credsStore`/`credHelpers` helpers) or `MLFN_REGISTRY_USERNAME`/`MLFN_REGISTRY_PASSWORD`;
they are never logged or put into error messages.

Plain HTTP is used for localhost/127.0.0.0/8/::1 registries and hosts listed in
`MLFN_INSECURE_REGISTRIES` (comma-separated), like Docker's insecure-registries.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Optional
from urllib.parse import urljoin

from mlfn.errors import BuildError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
DOCKER_HUB = "registry-1.docker.io"


def split_reference(ref: str) -> tuple[str, str, Optional[str], Optional[str]]:
    """'host[:port]/repo[:tag][@digest]' -> (host, repository, tag, digest).

    Like Docker: a first component without '.', ':' and not 'localhost' is a Docker Hub path."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repo = first, rest
    else:
        host, repo = DOCKER_HUB, ref if "/" in ref else f"library/{ref}"
    return host, repo, tag, digest


def _docker_config() -> dict:
    base = os.environ.get("DOCKER_CONFIG")
    path = Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def credentials_for(host: str) -> Optional[tuple[str, str]]:
    """(username, password) for `host` from the environment or the docker config, or None."""
    user, pw = os.environ.get("MLFN_REGISTRY_USERNAME"), os.environ.get("MLFN_REGISTRY_PASSWORD")
    if user and pw:
        return user, pw
    cfg = _docker_config()
    keys = {host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"}
    if host == DOCKER_HUB:
        keys |= {"https://index.docker.io/v1/", "index.docker.io", "docker.io"}
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    for key, entry in (cfg.get("auths") or {}).items():
        if key in keys and isinstance(entry, dict):
            if entry.get("auth"):
                try:
                    u, _, p = base64.b64decode(entry["auth"]).decode().partition(":")
                    return u, p
                except ValueError:
                    continue
            if entry.get("username") and entry.get("password"):
                return entry["username"], entry["password"]
    if helper:
        try:
            out = subprocess.run([f"docker-credential-{helper}", "get"], input=host, capture_output=True,
                                 text=True, timeout=20)
            if out.returncode == 0:
                data = json.loads(out.stdout)
                return data.get("Username", ""), data.get("Secret", "")
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return None


def _insecure(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    if name in ("localhost", "[::1]") or name.startswith("127."):
        return True
    extra = [h.strip() for h in os.environ.get("MLFN_INSECURE_REGISTRIES", "").split(",") if h.strip()]
    return host in extra or name in extra


class Registry:
    """One repository on one registry."""

    def __init__(self, host: str, repository: str, credentials: Optional[tuple] = None, timeout: float = 60):
        import requests

        self.host = host
        self.repository = repository
        self.scheme = "http" if _insecure(host) else "https"
        self.base = f"{self.scheme}://{host}/v2/{repository}"
        self.credentials = credentials
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "mlfn"
        self.timeout = timeout
        self._auth_header: Optional[str] = None

    @classmethod
    def for_repository(cls, ref: str) -> "Registry":
        host, repo, _, _ = split_reference(ref)
        return cls(host, repo, credentials_for(host))

    # -- transport ------------------------------------------------------------------
    def _send(self, method: str, url: str, **kw):
        import requests

        headers = dict(kw.pop("headers", {}) or {})
        if self._auth_header:
            headers["Authorization"] = self._auth_header
        try:
            return self.session.request(method, url, headers=headers, timeout=self.timeout, **kw)
        except requests.exceptions.SSLError:
            raise BuildError(f"The registry {self.host} does not speak HTTPS that this machine trusts; "
                             f"for a plain-HTTP registry add it to MLFN_INSECURE_REGISTRIES.") from None
        except requests.exceptions.ConnectionError:
            raise BuildError(f"The registry {self.host} is unreachable; check the address and that it is running.") from None
        except requests.exceptions.Timeout:
            raise BuildError(f"The registry {self.host} did not answer within {self.timeout:.0f} s.") from None

    def request(self, method: str, path_or_url: str, *, ok=(200,), action: str = "", **kw):
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        data = kw.get("data")
        resp = self._send(method, url, **kw)
        if resp.status_code == 401:
            self._authenticate(resp.headers.get("WWW-Authenticate", ""))
            if hasattr(data, "seek"):
                data.seek(0)
            resp = self._send(method, url, **kw)
        if resp.status_code not in ok:
            self._fail(resp, action or f"{method} {url}")
        return resp

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() == "basic":
            if not self.credentials:
                raise BuildError(f"The registry {self.host} needs a login; run 'docker login {self.host}'.")
            raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
            self._auth_header = "Basic " + base64.b64encode(raw).decode()
        elif scheme.lower() == "bearer" and fields.get("realm"):
            query = {"service": fields.get("service", "")}
            query["scope"] = fields.get("scope") or f"repository:{self.repository}:pull,push"
            auth = tuple(self.credentials) if self.credentials else None
            resp = self._send_plain("GET", fields["realm"], params=query, auth=auth)
            if resp.status_code != 200:
                raise BuildError(f"The registry {self.host} refused a token for {self.repository} "
                                 f"(HTTP {resp.status_code}); run 'docker login {self.host}'.")
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                raise BuildError(f"The token service of {self.host} returned no token.")
            self._auth_header = f"Bearer {token}"
        else:
            raise BuildError(f"The registry {self.host} asks for an unsupported authentication ({scheme or 'none'}).")

    def _send_plain(self, method, url, **kw):
        import requests

        try:
            return self.session.request(method, url, timeout=self.timeout, **kw)
        except requests.exceptions.RequestException:
            raise BuildError(f"The token service of {self.host} is unreachable.") from None

    def _fail(self, resp, action: str):
        code = resp.status_code
        try:
            errors = resp.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except ValueError:
            detail = resp.text[:200].strip()
        if code in (401, 403):
            raise BuildError(f"The registry {self.host} refused {action} for {self.repository} "
                             f"(unauthorized); run 'docker login {self.host}' with an account that may push there.")
        if code == 507 or "no space" in detail.lower():
            raise BuildError(f"The registry {self.host} is out of disk space ({action}).")
        if code == 404:
            raise BuildError(f"{self.host}/{self.repository}: not found ({action}).")
        raise BuildError(f"The registry {self.host} answered HTTP {code} to {action}: {detail or resp.reason}.")

    # -- API ------------------------------------------------------------------------
    def ping(self) -> None:
        url = f"{self.scheme}://{self.host}/v2/"
        resp = self._send("GET", url)
        if resp.status_code == 401:
            # try our credentials against the repository scope
            self._authenticate(resp.headers.get("WWW-Authenticate", ""))

    def blob_exists(self, digest: str) -> bool:
        resp = self.request("HEAD", f"/blobs/{digest}", ok=(200, 404), action="a blob check")
        return resp.status_code == 200

    def upload_blob(self, path: Path, digest: str, size: int) -> None:
        """Monolithic upload: POST to open a session, PUT the bytes with ?digest=."""
        if self.blob_exists(digest):
            return
        resp = self.request("POST", "/blobs/uploads/", ok=(202,), action="starting an upload",
                            headers={"Content-Length": "0"})
        location = urljoin(self.base + "/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        with open(path, "rb") as f:
            self.request("PUT", f"{location}{sep}digest={digest}", ok=(201,), action="uploading a layer", data=f,
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        import hashlib

        resp = self.request("PUT", f"/manifests/{reference}", ok=(201,), action="uploading the manifest",
                            data=body, headers={"Content-Type": media_type})
        return resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def get_manifest(self, reference: str) -> dict:
        resp = self.request("GET", f"/manifests/{reference}", headers={"Accept": ACCEPT}, action="reading the manifest")
        doc = resp.json()
        doc.setdefault("mediaType", resp.headers.get("Content-Type", "").split(";")[0])
        return doc

    def get_manifest_raw(self, reference: str) -> tuple[bytes, str]:
        resp = self.request("GET", f"/manifests/{reference}", headers={"Accept": ACCEPT}, action="reading the manifest")
        return resp.content, resp.headers.get("Content-Type", "").split(";")[0]

    def download_blob(self, digest: str, dest: Path) -> None:
        import hashlib

        resp = self.request("GET", f"/blobs/{digest}", action="downloading a layer", stream=True)
        h = hashlib.sha256()
        tmp = dest.with_name(dest.name + ".partial")
        with open(tmp, "wb") as f:
            for chunk in resp.iter_content(1 << 20):
                h.update(chunk)
                f.write(chunk)
        if "sha256:" + h.hexdigest() != digest:
            tmp.unlink()
            raise BuildError(f"A layer downloaded from {self.host}/{self.repository} does not match its digest {digest}.")
        os.replace(tmp, dest)
