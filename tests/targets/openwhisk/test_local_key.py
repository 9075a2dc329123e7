"""Issue 11 item 12: the local controller accepts OpenWhisk's well-known guest key by
default, and a private key after `mlfn local up --auth generate`; `mlfn local status` says
which one is in force and never prints it."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
import requests

from mlfn.targets.local.home import local_key, new_key, write_wskprops
from mlfn.targets.openwhisk.wskprops import GUEST_AUTH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_generated_key_is_private_to_the_state_folder(tmp_path):
    assert local_key(tmp_path).kind == "guest" and local_key(tmp_path).auth == GUEST_AUTH  # nothing written yet
    key = new_key("generate")
    write_wskprops(key, "http://127.0.0.1:1", tmp_path)
    path = tmp_path / "wskprops"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_key(tmp_path) == key and key.kind == "private" and key.auth != GUEST_AUTH
    assert key.auth.split(":")[1] not in repr(key)
    assert new_key("generate").auth != key.auth  # a new one each time


def test_the_api_accepts_only_the_key_of_its_folder(tmp_path):
    import threading

    from mlfn.targets.local.api import close, make_server

    key = new_key("generate")
    write_wskprops(key, "http://127.0.0.1:1", tmp_path)

    class NoDocker:  # the REST API alone: no action is run here
        class containers:
            @staticmethod
            def list(**kw):
                return []

    server, controller = make_server(tmp_path, port=0, docker_client=NoDocker())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/namespaces/_/packages"
    try:
        assert requests.get(url, auth=tuple(GUEST_AUTH.split(":", 1)), timeout=5).status_code == 401
        assert requests.get(url, auth=tuple(key.auth.split(":", 1)), timeout=5).status_code == 200
        assert requests.get(url, auth=(key.auth.split(":")[0], "x" + key.auth.split(":")[1]), timeout=5).status_code == 401
    finally:
        close(server, controller)


@pytest.mark.docker
def test_local_up_auth_generate_end_to_end(tmp_path):
    env = {**os.environ, "MLFN_LOCAL_HOME": str(tmp_path)}
    port = _free_port()

    def mlfn(*args):
        return subprocess.run([sys.executable, "-m", "mlfn.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    try:
        r = mlfn("local", "up", "--port", str(port), "--auth", "generate")
        assert r.returncode == 0, r.stderr
        key = local_key(tmp_path)
        assert key.kind == "private"
        secret = key.auth.split(":")[1]
        st = mlfn("local", "status")
        assert "a private key" in st.stdout and str(tmp_path / "wskprops") in st.stdout
        doc = json.loads(mlfn("local", "status", "-o", "json").stdout)
        assert doc["key"] == "private" and doc["running"] is True
        # the deploy commands use the folder's key: the API answers (404 for an unknown function), not 401
        r = mlfn("versions", "nofunc")
        assert r.returncode != 0 and "does not exist" in r.stderr and "credentials" not in r.stderr
        # the well-known key no longer opens it
        url = f"http://127.0.0.1:{port}/api/v1/namespaces/_/packages"
        assert requests.get(url, auth=tuple(GUEST_AUTH.split(":", 1)), timeout=5).status_code == 401
        # changing the key of a running controller is refused, in one sentence
        r = mlfn("local", "up", "--auth", "guest")
        assert r.returncode == 1 and "already runs with the private key" in r.stderr
        for out in (r, st):
            assert secret not in out.stdout + out.stderr
    finally:
        mlfn("local", "down")
    log = (tmp_path / "server.log").read_text()
    assert secret not in log
