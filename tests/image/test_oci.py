"""The daemonless builder: OCI layout, reproducible digests, pushes over the registry API."""
from __future__ import annotations

import base64
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from click.testing import CliRunner

from mlfn.image import build_image
from mlfn.config import load_config
from mlfn.errors import BuildError
from tests.image.conftest import AUTH_PASSWORD, AUTH_USER, running, skopeo

pytestmark = pytest.mark.docker  # skopeo copy into the engine and a container run


@pytest.fixture(scope="session")
def oci_image(base_image, digits_project, tmp_path_factory):
    layout = tmp_path_factory.mktemp("oci") / "layout"
    return build_image(load_config(str(digits_project)), builder="oci", oci_layout=str(layout))


def test_layout_is_valid_and_the_image_runs(oci_image, digits_project, docker_client):
    r = oci_image
    tag = r.image.rsplit(":", 1)[1]
    info = json.loads(skopeo("inspect", f"oci:{r.oci_layout}:{tag}"))
    assert info["Digest"] == r.digest
    assert info["Labels"]["dev.mlfn.model.sha256"] == r.model_sha256
    assert info["Labels"]["dev.mlfn.content-hash"] == r.content_hash
    assert len(info["Layers"]) == len(r.layers)  # one base layer + deps, runtime, models, config
    raw = json.loads(skopeo("inspect", "--config", "--raw", f"oci:{r.oci_layout}:{tag}"))
    assert raw["config"]["User"] == "65532" and raw["config"]["Cmd"] == ["python3", "-m", "mlfn_runtime"]
    assert "PYTHONPATH=/opt/mlfn/runtime:/opt/mlfn/deps" in raw["config"]["Env"]
    assert r.compressed_size_bytes < r.size_bytes

    local = f"mlfnb-test/oci-digits:{tag}"
    skopeo("copy", "-q", f"oci:{r.oci_layout}:{tag}", f"docker-daemon:{local}")
    try:
        with running(local, read_only=True) as url:
            png = digits_project / "inputs" / "digit-7.png"
            body = {"value": {"image": base64.b64encode(png.read_bytes()).decode()}}
            assert requests.post(url + "/init", json={"value": {}}, timeout=10).status_code == 200
            resp = requests.post(url + "/run", json=body, timeout=10)
            assert resp.status_code == 200 and resp.json()["predictions"][0]["label"] == "7"
    finally:
        docker_client.images.remove(local, force=True)


def test_same_inputs_same_digest_without_a_daemon(oci_image, digits_project, tmp_path, monkeypatch):
    """Another folder, a fresh conversion, no Docker daemon: the same manifest digest."""
    other = tmp_path / "elsewhere" / "digits"
    shutil.copytree(digits_project, other, ignore=shutil.ignore_patterns(".mlfn"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    res = CliRunner().invoke(
        __import__("mlfn.cli", fromlist=["main"]).main,
        ["build", "-c", str(other), "--builder", "oci", "--oci-layout", str(tmp_path / "out"), "-o", "json"],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["digest"] == oci_image.digest
    assert doc["image_id"] == oci_image.image_id
    assert (tmp_path / "out" / "index.json").is_file()


def test_source_date_epoch_is_the_creation_time(base_image, digits_project, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    r = build_image(load_config(str(digits_project)), builder="oci", oci_layout=str(tmp_path / "l"))
    raw = json.loads(skopeo("inspect", "--config", "--raw", f"oci:{tmp_path / 'l'}:{r.image.rsplit(':', 1)[1]}"))
    assert raw["created"] == "2023-11-14T22:13:20Z"
    assert r.labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


def test_push_anonymous_and_basic_auth(oci_image, digits_project, registry, auth_registry, docker_login):
    cfg = load_config(str(digits_project))
    r = build_image(cfg, builder="oci", push=f"{registry}/oci/digits:v1")
    assert r.digest == oci_image.digest and r.repo_digest == f"{registry}/oci/digits@{r.digest}"
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry}/oci/digits:v1"))
    assert info["Digest"] == r.digest

    with pytest.raises(BuildError, match=r"refused .*unauthorized|needs a login"):
        build_image(cfg, builder="oci", push=f"{auth_registry}/oci/digits:v1")
    docker_login(auth_registry, AUTH_USER, AUTH_PASSWORD)
    r2 = build_image(cfg, builder="oci", push=f"{auth_registry}/oci/digits:v1")
    assert r2.digest == oci_image.digest
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", f"{AUTH_USER}:{AUTH_PASSWORD}",
                             f"docker://{auth_registry}/oci/digits:v1"))
    assert info["Digest"] == r.digest


class _TokenProxy(BaseHTTPRequestHandler):
    """A registry front that demands bearer tokens (like Docker Hub/GHCR) and forwards the
    authorized requests to the real registry behind it."""

    upstream = ""
    issued: list = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _challenge(self):
        host = self.headers["Host"]
        repo = self.path.split("/v2/", 1)[1].rsplit("/blobs/", 1)[0].rsplit("/manifests/", 1)[0] \
            if "/v2/" in self.path and self.path != "/v2/" else ""
        scope = f',scope="repository:{repo}:pull,push"' if repo else ""
        self.send_response(401)
        self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="mlfn-test"{scope}')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _any(self):
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            token = f"tok-{len(self.issued)}"
            self.issued.append(token)
            body = json.dumps({"token": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.headers.get("Authorization", "").removeprefix("Bearer ") not in self.issued:
            return self._challenge()
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "content-length")}
        resp = requests.request(self.command, f"http://{self.upstream}{self.path}", data=data, headers=headers,
                                allow_redirects=False, timeout=60)
        self.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(k, v)
        body = resp.content if self.command != "HEAD" else b""
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else resp.headers.get("Content-Length", 0)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any


def test_push_with_bearer_token_auth(oci_image, digits_project, registry, docker_login):
    _TokenProxy.upstream = registry
    _TokenProxy.issued = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        cfg = load_config(str(digits_project))
        with pytest.raises(BuildError, match="refused a token"):
            build_image(cfg, builder="oci", push=f"{host}/bearer/digits:v1")
        docker_login(host, AUTH_USER, AUTH_PASSWORD)
        r = build_image(cfg, builder="oci", push=f"{host}/bearer/digits:v1")
        assert r.digest == oci_image.digest and _TokenProxy.issued
        info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry}/bearer/digits:v1"))
        assert info["Digest"] == r.digest
    finally:
        server.shutdown()


def test_oci_errors(digits_project, tmp_path):
    cfg = load_config(str(digits_project), overrides={"build.base_image": "mlfn-base:nope"})
    with pytest.raises(BuildError, match="mlfn base build --tag mlfn-base:nope"):
        build_image(cfg, builder="oci", oci_layout=str(tmp_path / "x"))
    with pytest.raises(BuildError, match="unreachable"):
        build_image(load_config(str(digits_project)), builder="oci", push="127.0.0.1:9/x/digits")


def test_a_broken_layer_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    """A cache entry cut short (an interrupted build) must not break every later build."""
    from mlfn.image.oci import tree_layer

    monkeypatch.setenv("MLFN_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    first = tree_layer(src, "opt/x", 0)
    entries = list((tmp_path / "cache" / "layers").glob("*.json"))
    assert len(entries) == 1 and not list((tmp_path / "cache" / "layers").glob(".*.tmp"))
    entries[0].write_text('{"digest": "sha256:')  # half-written
    again = tree_layer(src, "opt/x", 0)
    assert again.digest == first.digest and again.path.is_file()
    assert json.loads(entries[0].read_text())["digest"] == first.digest
