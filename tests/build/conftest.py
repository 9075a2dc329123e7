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
