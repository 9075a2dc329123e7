"""The REAL digits image under `--memory 256m` (issue 11, items 2 and 3): concurrent gzip
bombs to /init are refused (413 before initialization, 403 after, without reading the
body) and the container is neither OOM-killed nor stops serving; on Knative (K_SERVICE)
/init and /run are off; code sent to /init does not run."""
from __future__ import annotations

import base64
import concurrent.futures
import gzip

import pytest
import requests

from .test_image_protocols import INIT, Container, _docker, image, samples  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BOMB = gzip.compress(b'{"value": {"env": {"PAD": "' + b"x" * (63 * 1024 * 1024) + b'"}}}', compresslevel=9)


def _bombs(url: str, n: int = 4) -> list:
    def one(_):
        r = requests.post(url + "/init", data=BOMB, timeout=60,
                          headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        return r.status_code, r.json().get("error", "")

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _alive(c: Container) -> None:
    state = _docker("inspect", "-f", "{{.State.Running}} {{.State.OOMKilled}} {{.RestartCount}}", c.name)
    assert state == "true false 0", state
    assert requests.get(c.url + "/healthz", timeout=5).status_code == 200


def test_concurrent_init_gzip_bombs_under_256m_are_refused_and_the_container_lives(image, samples):
    assert len(BOMB) < 100 * 1024
    c = Container(image, "--memory", "256m", "--memory-swap", "256m")
    try:
        for status, error in _bombs(c.url):  # not initialized yet: capped, decompressed only up to the cap
            assert status == 413 and "the /init limit" in error
        _alive(c)
        assert requests.post(c.url + "/init", json=INIT, timeout=30).status_code == 200
        for status, error in _bombs(c.url):  # initialized: refused before the body is read
            assert status == 403 and "more than once" in error
        _alive(c)
        pngs, labels = samples
        r = requests.post(c.url + "/run", json={"value": {"image": base64.b64encode(pngs[0]).decode()}}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(labels[0]), r.text
        evil = {"value": {"name": "x", "main": "main", "binary": False,
                          "code": "def main(a):\n    import os\n    return {'uid': os.getuid()}\n"}}
        assert requests.post(c.url + "/init", json=evil, timeout=30).status_code == 403
    finally:
        c.remove()


def test_on_knative_the_image_serves_no_init_or_run_and_runs_no_code(image, samples):
    c = Container(image, "-e", "K_SERVICE=digits", "-e", "K_REVISION=digits-00001")
    try:
        evil = {"value": {"name": "x", "main": "main", "binary": False,
                          "code": "def main(a):\n    import os\n    return {'uid': os.getuid()}\n"}}
        r = requests.post(c.url + "/init", json=evil, timeout=30)
        assert r.status_code == 404 and "/init and /run are off in this deployment" in r.json()["error"]
        assert requests.post(c.url + "/run", json={"value": {}}, timeout=30).status_code == 404
        pngs, labels = samples
        r = requests.post(c.url + "/predict", data=pngs[1], headers={"Content-Type": "image/png"}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(labels[1]), r.text
    finally:
        c.remove()
