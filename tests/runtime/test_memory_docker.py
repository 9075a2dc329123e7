"""The REAL digits image under `docker run --memory 256m`: a 71 KB PNG that decodes to
61 MiB (RGBA 4000x4000) and four 3000x3000 RGBA images at once are answered (413 or
200) and the container neither is OOM-killed nor stops serving. The control: the same
container told its limit is 4 GiB (MLFN_MEMORY_MB, so nothing is refused) is OOM-killed
by the concurrent images, which is what happened before the budget."""
from __future__ import annotations

import io
import json
import threading
import time

import pytest
import requests
from PIL import Image

from .test_image_protocols import Container, _docker, image  # noqa: F401  (image: the built digits image)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
LIMIT = ["--memory", "256m", "--memory-swap", "256m"]


def png(mode: str, side: int) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), (200,) * len(mode)).save(buf, "PNG")
    return buf.getvalue()


def oom_killed(c: Container) -> bool:
    return json.loads(_docker("inspect", "--format", "{{json .State.OOMKilled}}", c.name))


def running(c: Container) -> bool:
    return json.loads(_docker("inspect", "--format", "{{json .State.Running}}", c.name))


def post_image(url: str, data: bytes, out: list):
    try:
        r = requests.post(url + "/predict", data=data, headers={"Content-Type": "image/png"}, timeout=60)
        out.append((r.status_code, r.json().get("error", "")))
    except requests.RequestException as e:
        out.append((None, type(e).__name__))


def concurrently(url: str, images: list) -> list:
    out: list = []
    threads = [threading.Thread(target=post_image, args=(url, data, out)) for data in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return out


def assert_serving(c: Container, digit: bytes):
    assert running(c) and not oom_killed(c), c.logs()[1][-2000:]
    r = requests.post(c.url + "/predict", data=digit, headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def digit() -> bytes:
    return png("L", 8)


def test_large_decodes_are_refused_not_oom_killed_under_256m(image, digit):
    c = Container(image, *LIMIT)
    try:
        big = png("RGBA", 4000)
        assert len(big) < 80_000
        out: list = []
        post_image(c.url, big, out)
        assert out[0][0] in (200, 413), out
        if out[0][0] == 413:
            assert "needs about" in out[0][1] and "memory limit 256 MiB" in out[0][1]
        assert_serving(c, digit)
        # a ladder of large images one at a time: glibc kept freed image blocks, and the
        # concurrent requests that followed were OOM-killed within the budget
        answers = {}
        for mode in ("RGBA", "RGB", "L"):
            for side in (2000, 3000, 5000, 6000):
                out = []
                post_image(c.url, png(mode, side), out)
                answers[mode, side] = out[0][0]
        assert set(answers.values()) <= {200, 413} and answers["L", 2000] == 200, answers
        for n, side in ((4, 3000), (8, 2000)):
            results = concurrently(c.url, [png("RGBA", side)] * n)
            assert len(results) == n and all(s in (200, 413) for s, _ in results), (n, side, results)
            assert_serving(c, digit)
    finally:
        c.remove()


def test_without_the_budget_the_same_images_oom_kill_the_container(image):
    """The control: MLFN_MEMORY_MB=4096 makes the function believe it has 4 GiB."""
    c = Container(image, *LIMIT, "-e", "MLFN_MEMORY_MB=4096")
    try:
        results = concurrently(c.url, [png("RGBA", 3000)] * 4 + [png("RGBA", 4000)] * 2)
        deadline = time.monotonic() + 15
        while running(c) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert oom_killed(c), (results, c.logs()[1][-2000:])
    finally:
        c.remove()
