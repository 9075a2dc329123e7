"""OpenWhisk /init hardening (issue 11, items 2 and 3): a refused /init costs nothing (it
is refused before its body is read), /init bodies are capped and decompress only up to
the cap, code sent to /init does not run unless opted in with a token, the weighted-alias
conductor works from init parameters alone, and Knative serves no /init or /run."""
import collections
import gzip
import hashlib
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from mlfn_runtime.errors import ConfigurationError
from mlfn_runtime.router import STATE_KEY
from mlfn_runtime.serving import Serving

from .conftest import INIT_TOKEN, b64, digit_png, running

EVIL = "def main(args):\n    import os\n    return {'uid': os.getuid(), 'env': dict(os.environ)}\n"
ROUTES = {"/guest/fn/v1": 90, "/guest/fn/v2": 10}


def init(url, value, **kw):
    return requests.post(url + "/init", json={"value": {"name": "fn", "main": "main", "binary": False, **value}},
                         timeout=10, **kw)


def raw_request(url: str, head: bytes, body: bytes = b"", wait: float = 5.0) -> bytes:
    """Send `head` + `body` on a fresh connection; what the server answers before closing or `wait`."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=wait) as s:
        s.sendall(head + body)
        out = b""
        try:
            while b"\r\n\r\n" not in out or len(out) < out.index(b"\r\n\r\n") + 4 + _length(out):
                piece = s.recv(65536)
                if not piece:
                    break
                out += piece
        except socket.timeout:
            pass
        return out


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_code_sent_to_init_is_refused_by_default_and_nothing_of_that_init_sticks(digits_dir, digits):
    with running(digits_dir) as (url, _):
        r = init(url, {"code": EVIL, "env": {"MLFN_REFUSED_MARK": "1"}})
        assert r.status_code == 403 and r.json() == {"error": (
            "This function does not run code sent to /init (code actions are off; "
            "see serving.code_actions in actions/README.md).")}
        assert "MLFN_REFUSED_MARK" not in os.environ
        # the container is still a clean docker action: a plain /init serves the model
        assert init(url, {"env": {}}).status_code == 200
        r = requests.post(url + "/run", json={"value": {"image": b64(digit_png(digits[0][0]))}}, timeout=10)
        assert r.status_code == 200 and "predictions" in r.json() and "uid" not in r.json()


def test_code_actions_opted_in_still_need_the_init_token(digits_dir, code_actions):
    with running(digits_dir) as (url, _):
        r = init(url, {"code": EVIL})
        assert r.status_code == 403 and "value.env.MLFN_INIT_TOKEN in /init) is missing or wrong" in r.json()["error"]
        r = init(url, {"code": EVIL, "env": {"MLFN_INIT_TOKEN": INIT_TOKEN + "x"}})
        assert r.status_code == 403
        assert init(url, {"code": EVIL, "env": {**code_actions, "OTHER": "y"}}).status_code == 200
        env = requests.post(url + "/run", json={"value": {}}, timeout=10).json()["env"]
        assert env["OTHER"] == "y" and "MLFN_INIT_TOKEN" not in env  # the code never sees the platform's token


def test_code_actions_without_an_init_token_do_not_start():
    with pytest.raises(ConfigurationError, match="serving.code_actions is on but no init token is set; set MLFN_INIT_TOKEN"):
        Serving.from_dict({"code_actions": True}, environ={})
    with pytest.raises(ConfigurationError, match="MLFN_SERVING_CODE_ACTIONS must be true or false"):
        Serving.from_dict(None, environ={"MLFN_SERVING_CODE_ACTIONS": "maybe"})
    digest = hashlib.sha256(b"s3cret").hexdigest()
    on = Serving.from_dict({"code_actions": True, "init_token_sha256": digest}, environ={})
    assert on.code_actions and on.init_token_sha256 == digest  # a hash in function.json, never the token
    with pytest.raises(ConfigurationError, match="init_token_sha256 in function.json must be 64 hex digits"):
        Serving.from_dict({"init_token_sha256": "s3cret"}, environ={})


def _conductor_counts(url: str, n: int) -> collections.Counter:
    counts = collections.Counter()
    with requests.Session() as s:
        for i in range(n):
            step = s.post(url + "/run", json={"value": {"i": i}, "activation_id": f"a{i}"}, timeout=10).json()
            assert step == {"action": step["action"], "params": {"i": i}, "state": {STATE_KEY: 1}}
            counts[step["action"]] += 1
    return counts


@pytest.mark.parametrize("routes", [json.dumps(ROUTES), ROUTES], ids=["json-string", "json-object"])
def test_the_alias_conductor_runs_from_init_env_without_code(digits_dir, routes):
    with running(digits_dir) as (url, _):
        r = init(url, {"env": {"MLFN_ALIAS_ROUTES": routes, "__OW_API_HOST": "https://ow"}})
        assert r.status_code == 200, r.text
        counts = _conductor_counts(url, 400)
        assert set(counts) == set(ROUTES) and 320 < counts["/guest/fn/v1"] < 395
        # step 2: the version's result passes through; a version's error stays an error
        r = requests.post(url + "/run", json={"value": {"predictions": [1], STATE_KEY: 1}}, timeout=10)
        assert r.status_code == 200 and r.json() == {"params": {"predictions": [1]}}
        r = requests.post(url + "/run", json={"value": {"error": "bad image", STATE_KEY: 1}}, timeout=10)
        assert r.json() == {"error": "bad image"}


@pytest.mark.parametrize("routes,message", [
    ("{nope", "MLFN_ALIAS_ROUTES is not JSON"),
    ('{"/ns/fn/v1": 90}', "the weights sum to 90, not 100"),
    ('{"v1": 100}', "'v1' is not an action path"),
    ('{"/ns/fn/v1": true}', "must be a whole number 0..100"),
    ('[["/ns/fn/v1", 100]]', "must be a JSON object"),
])
def test_bad_alias_routes_are_400_and_init_can_be_retried(digits_dir, routes, message):
    with running(digits_dir) as (url, _):
        r = init(url, {"env": {"MLFN_ALIAS_ROUTES": routes}})
        assert r.status_code == 400 and message in r.json()["error"] and "value.env in /init" in r.json()["error"]
        assert init(url, {"env": {"MLFN_ALIAS_ROUTES": '{"/ns/fn/v1": 100}'}}).status_code == 200


def test_a_second_init_is_refused_before_its_body_is_read(digits_dir):
    with running(digits_dir) as (url, _):
        assert init(url, {"env": {}}).status_code == 200
        t0 = time.monotonic()
        # headers announce 60 MB that never come: the 403 must not wait for (or hold) them
        out = raw_request(url, b"POST /init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 60000000\r\n\r\n", b'{"value": {')
        assert out.startswith(b"HTTP/1.1 403") and b"Connection: close" in out
        assert b"more than once" in out and time.monotonic() - t0 < 3


def _gzip_bomb(megabytes: int) -> bytes:
    inner = b"x" * (megabytes * 1024 * 1024)
    return gzip.compress(b'{"value": {"env": {"PAD": "' + inner + b'"}}}', compresslevel=9)


def test_init_bodies_are_capped_and_gzip_bombs_are_not_inflated(digits_dir):
    bomb = _gzip_bomb(63)
    assert len(bomb) < 100 * 1024
    with running(digits_dir) as (url, _):
        r = requests.post(url + "/init", data=bomb, headers={"Content-Encoding": "gzip",
                                                             "Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 413 and "more than 1048576 bytes decompressed (the /init limit)" in r.json()["error"]
        r = requests.post(url + "/init", data=b"{" + b" " * (2 * 1024 * 1024) + b"}", timeout=10)
        assert r.status_code == 413 and "the /init limit" in r.json()["error"]
        assert init(url, {"env": {"A": "b"}}).status_code == 200  # still initializes afterwards
        assert requests.get(url + "/healthz", timeout=5).status_code == 200


def test_openwhisk_routes_are_off_on_knative_unless_configured(digits_dir, monkeypatch):
    assert Serving.from_dict(None, environ={"K_SERVICE": "digits"}).openwhisk is False
    assert Serving.from_dict(None, environ={}).openwhisk is True
    assert Serving.from_dict(None, environ={"K_SERVICE": "d", "MLFN_SERVING_OPENWHISK": "true"}).openwhisk is True
    assert Serving.from_dict({"openwhisk": False}, environ={}).openwhisk is False
    monkeypatch.setenv("K_SERVICE", "digits")
    with running(digits_dir) as (url, _):
        out = raw_request(url, b"POST /init HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 404") and b"/init and /run are off in this deployment" in out
        r = requests.post(url + "/run", json={"value": {}}, timeout=5)
        assert r.status_code == 404 and "serving.openwhisk is false" in r.json()["error"]
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
