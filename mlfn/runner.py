"""`mlfn run`: start a function image on this machine and wait until it answers.

The container runs the way the platforms run it: read-only root filesystem with a
writable /tmp (Knative's runtime contract), the image's own non-root user, port 8080
published on 127.0.0.1 only.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlfn.errors import BuildError, MlfnError


@dataclass
class RunResult:
    url: str
    container: str
    image: str
    name: str
    ready_ms: float


def docker_client():
    """The docker SDK client, with a clear error when no engine is reachable."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
        return client
    except DockerException:
        raise BuildError(
            "No Docker engine is reachable (is dockerd running and DOCKER_HOST right?); "
            "start Docker, or use 'mlfn run --no-docker'."
        ) from None


def container_name(function: Optional[str], project_dir: Optional[Path], image: Optional[str] = None) -> str:
    """`mlfn-NAME-<8 hex>`, unique per project folder (or per image when run without a
    project), so running another project's function of the same name leaves this one alone."""
    import hashlib

    if function and project_dir is not None:
        base, owner = function, str(Path(project_dir).resolve())
    else:
        base, owner = (image or "image").rsplit("/", 1)[-1].split("@")[0].split(":")[0], image or ""
    return f"mlfn-{base}-{hashlib.sha256(owner.encode()).hexdigest()[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> int:
    """port, when nothing listens on 127.0.0.1:port; else a one-sentence error."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise MlfnError(f"Port {port} on 127.0.0.1 is not free ({e.strerror}); pass another --port, or none "
                            "to pick a free one.") from None
    return port


def wait_ready(url: str, timeout: float = 30.0, is_alive: Callable[[], bool] = lambda: True) -> float:
    """Poll GET {url}/healthz until 200; returns the milliseconds it took."""
    import requests

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not is_alive():
            raise MlfnError(f"The function at {url} exited before it became ready; see its logs.")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return (time.monotonic() - t0) * 1000
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise MlfnError(f"The function at {url} did not become ready within {timeout:.0f} s.")


def run_container(image: str, *, name: str, port: Optional[int] = None, env: Optional[dict] = None,
                  timeout: float = 60.0) -> RunResult:
    """Start image detached (replacing a container of the same name) and wait until it is ready."""
    from docker.errors import APIError, ImageNotFound, NotFound

    client = docker_client()
    try:
        client.images.get(image)
    except ImageNotFound:
        raise BuildError(f"Image {image} is not in the local Docker engine; build it with 'mlfn build' "
                         f"(or pull it: docker pull {image}).") from None
    try:
        client.containers.get(name).remove(force=True)
    except NotFound:
        pass
    port = check_port_free(port) if port else free_port()
    try:
        container = client.containers.run(
            image,
            name=name,
            detach=True,
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            ports={"8080/tcp": ("127.0.0.1", port)},
            environment=env or {},
            labels={"dev.mlfn.run": "1"},
        )
    except APIError as e:  # e.g. the port was taken in between
        try:
            client.containers.get(name).remove(force=True)
        except NotFound:
            pass
        raise MlfnError(f"Docker could not start {image} as {name}: {e.explanation or e}.") from None
    url = f"http://127.0.0.1:{port}"

    def alive() -> bool:
        container.reload()
        return container.status in ("created", "running")

    try:
        ready = wait_ready(url, timeout=timeout, is_alive=alive)
    except MlfnError:
        logs = container.logs(tail=20).decode(errors="replace").strip()
        container.reload()
        exited = container.status == "exited"
        code = container.attrs.get("State", {}).get("ExitCode")
        container.remove(force=True)
        what = (f"exited with code {code} before it answered on port 8080" if exited
                else f"did not answer on port 8080 within {timeout:.0f} s")
        if not logs:
            raise MlfnError(f"The container from {image} {what} and logged nothing; is {image} a function image "
                            "made by 'mlfn build'?") from None
        raise MlfnError(f"The container from {image} {what}; its last log lines:\n{logs}") from None
    except BaseException:
        container.remove(force=True)
        raise
    return RunResult(url=url, container=container.id[:12], image=image, name=name, ready_ms=round(ready, 1))


def stop_container(name: str) -> bool:
    from docker.errors import NotFound

    try:
        docker_client().containers.get(name).remove(force=True)
        return True
    except NotFound:
        return False
