"""Auth against the REAL digits image in Docker (read-only root, non-root user): the
hostile corpus, 8 concurrent clients against a rate limit, revocation through the mounted
key file updated in place, and no secret in the container's logs."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.auth.credentials import AUTH_SETTINGS, HS_ENV, accepted, hostile_corpus, make_material
from tests.runtime.test_image_protocols import Container

pytestmark = [pytest.mark.docker, pytest.mark.slow]
MOUNT = "/var/run/mlfn/auth"


@pytest.fixture(scope="module")
def material():
    return make_material(revoked_too=False)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory, material):
    d = tmp_path_factory.mktemp("secret")
    d.chmod(0o755)
    (d / "keys.json").write_text(json.dumps(material.key_set))
    (d / "keys.json").chmod(0o644)
    return d


@pytest.fixture(scope="module")
def container(auth_image, key_dir, material):
    c = Container(auth_image.image, "-v", f"{key_dir}:{MOUNT}:ro", "-e", f"{HS_ENV}={material.hs_secret}")
    yield c
    c.remove()


@pytest.fixture(scope="module")
def png(validation_png):
    return validation_png


def _call(s, url, path, headers, png):
    method = "POST" if path in ("/predict", "/v2/models/digits/infer") else "GET"
    return s.request(method, url + path, headers={"Content-Type": "image/png", **headers},
                     data=png if method == "POST" else None, timeout=10)


def test_hostile_corpus_against_the_image(container, material, png):
    s = requests.Session()
    corpus = hostile_corpus(material)
    assert len(corpus) >= 30
    for name, path, headers, status in corpus:
        r = _call(s, container.url, path, headers, png)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.json()["error"], name
        assert requests.get(container.url + "/healthz", timeout=5).status_code == 200, name
    for name, path, headers in accepted(material):
        assert _call(s, container.url, path, headers, png).status_code == 200, name


def test_rate_limit_under_8_concurrent_clients(container, material):
    """krated: 20/s, burst 5. Over the window, the admitted rate beyond the burst is within 10%."""
    h = {"X-API-Key": material.keys["rated"]}
    admitted, refused = [], []
    stop = time.monotonic() + 3.0
    start = time.monotonic()

    def client():
        s = requests.Session()
        while time.monotonic() < stop:
            r = s.get(container.url + "/v1/models/digits/metadata", headers=h, timeout=10)
            (admitted if r.status_code == 200 else refused).append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    rate = (len(admitted) - 5) / elapsed
    assert set(refused) == {429} and len(refused) >= len(admitted), (len(admitted), len(refused))  # saturated
    assert abs(rate - 20) <= 2.0, (rate, len(admitted), len(refused), elapsed)


def test_revocation_reaches_the_running_container(container, key_dir, material):
    h = {"X-API-Key": material.keys["all"]}
    assert requests.get(container.url + "/v1/models/digits/metadata", headers=h, timeout=5).status_code == 200
    doc = json.loads(json.dumps(material.key_set))
    doc["keys"] = [k for k in doc["keys"] if k["id"] != "kall"]
    path = key_dir / "keys.json"
    with open(path, "r+") as f:  # in place: the mounted file keeps its inode
        f.seek(0)
        f.write(json.dumps(doc))
        f.truncate()
    t0 = time.monotonic()
    while requests.get(container.url + "/v1/models/digits/metadata", headers=h, timeout=5).status_code != 401:
        assert time.monotonic() - t0 < AUTH_SETTINGS["reload_seconds"] + 1.0, "revocation did not arrive in time"
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert took <= AUTH_SETTINGS["reload_seconds"] + 1.0


def test_no_secret_in_the_containers_logs(container, material):
    _call(requests.Session(), container.url, "/predict", {"X-API-Key": material.keys["expired"]}, b"")
    out, err = container.logs()
    tokens = [h.get("Authorization", "").partition(" ")[2] for _, _, h, _ in hostile_corpus(material)]
    for secret in material.secrets() + [t for t in tokens if len(t) > 20]:
        assert secret not in out and secret not in err
