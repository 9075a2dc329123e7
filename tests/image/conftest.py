"""Helpers for the build tests: run an image in Docker on an ephemeral port, clean up."""
from __future__ import annotations

import contextlib
import time

import pytest
import requests


@contextlib.contextmanager
def running(image: str, *, env=None, read_only: bool = False, port: int = 8080, wait: str = "/v2/health/ready",
            timeout: float = 30.0, **kwargs):
    """Start `image` detached with `port` published on 127.0.0.1:<ephemeral>; yield the base URL."""
    import docker

    client = docker.from_env()
    container = client.containers.run(
        image, detach=True, environment=env or {}, ports={f"{port}/tcp": ("127.0.0.1", None)},
        read_only=read_only, tmpfs={"/tmp": ""} if read_only else None, labels={"dev.mlfn.test": "build"},
        **kwargs,
    )
    try:
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "exited":
                raise AssertionError(f"container exited: {container.logs().decode()[-2000:]}")
            ports = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp")
            if ports:
                url = f"http://127.0.0.1:{ports[0]['HostPort']}"
                try:
                    if requests.get(url + wait, timeout=1).status_code < 500:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"{image} did not answer {wait} within {timeout}s: {container.logs().decode()[-2000:]}")
        yield url
    finally:
        container.remove(force=True)


@pytest.fixture
def docker_client():
    import docker

    return docker.from_env()


# -- registries (scripts/registry.sh: Debian's docker-registry on 127.0.0.1) -------------
import shutil as _shutil
import subprocess as _subprocess
from pathlib import Path as _Path

REGISTRY_SH = _Path(__file__).resolve().parents[2] / "scripts" / "registry.sh"


def _start_registry(state_dir, auth=None) -> str:
    if _shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    cmd = ["sh", str(REGISTRY_SH), "start", str(state_dir)] + (["--auth", auth] if auth else [])
    return _subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """An anonymous registry: yields '127.0.0.1:PORT'."""
    state = tmp_path_factory.mktemp("registry")
    addr = _start_registry(state)
    yield addr
    _subprocess.run(["sh", str(REGISTRY_SH), "stop", str(state)], check=False)


AUTH_USER, AUTH_PASSWORD = "mlfn-ci", "Pa55-not-in-logs"


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    """A registry with htpasswd basic auth (AUTH_USER/AUTH_PASSWORD): yields '127.0.0.1:PORT'."""
    state = tmp_path_factory.mktemp("registry-auth")
    addr = _start_registry(state, f"{AUTH_USER}:{AUTH_PASSWORD}")
    yield addr
    _subprocess.run(["sh", str(REGISTRY_SH), "stop", str(state)], check=False)


@pytest.fixture
def docker_login(tmp_path, monkeypatch):
    """Point DOCKER_CONFIG at a fresh config.json; returns a function adding an `auths` entry."""
    import base64
    import json

    cfg_dir = tmp_path / "docker-config"
    cfg_dir.mkdir()
    (cfg_dir / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg_dir))

    def login(host: str, user: str, password: str) -> None:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        (cfg_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))

    return login


def skopeo(*args: str) -> str:
    if _shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    return _subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project_copy(digits_project, tmp_path):
    """A private copy of the trained digits project (tests edit its mlfn.yaml), sharing its
    conversion cache, without a model.tflite an earlier `mlfn quantize` of the shared project
    may have written."""
    dest = tmp_path / "digits"
    _shutil.copytree(digits_project, dest, ignore=_shutil.ignore_patterns(".mlfn", "model.tflite"))
    cache = digits_project / ".mlfn" / "cache"
    if cache.exists():
        _shutil.copytree(cache, dest / ".mlfn" / "cache")
    return dest


def edit_yaml(project, change) -> None:
    import yaml

    path = _Path(project) / "mlfn.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
