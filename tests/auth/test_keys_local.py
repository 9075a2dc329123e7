"""`mlfn keys` on the local target: the key set is the package parameter `mlfn_auth`
(hashes only), the key is printed once, and a revoked key is refused by a running web
action at its next activation; non-web invocations are the platform's."""
from __future__ import annotations

import base64
import json

import pytest
import requests
from click.testing import CliRunner

from tests.conftest import ROOT

INPUTS = ROOT / "samples" / "digits" / "inputs"


def _publish(port: int, function: str, image: str = "example/none:1", web: bool = False):
    from mlfn import releases as lib
    from mlfn.targets.interface import VersionSpec

    opts = lib.TargetOptions(target="local", port=port)
    t = lib.open_target(None, opts)
    t.publish(VersionSpec(function=function, image=image, digest="", model_sha256="", quantization="int8",
                          pipeline_hash="", content_hash=function + image))
    lib.set_traffic(function, {"v1": 100}, options=opts, web=web)
    return opts, t


def _cli(*args):
    from mlfn.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_keys_create_list_revoke_through_the_cli(rest_api, tmp_path, monkeypatch):
    from mlfn_runtime.api_keys import hash_key

    monkeypatch.chdir(tmp_path)
    port = str(rest_api.server_address[1])
    _, target = _publish(rest_api.server_address[1], "keyed")
    r = _cli("keys", "create", "keyed", "--scope", "digits:predict", "--expires", "90d", "--rate", "20/s",
             "-t", "local", "--port", port, "-o", "json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    key, key_id = created["key"], created["info"]["id"]
    assert key.startswith("mlfn_") and created["info"]["scopes"] == ["digits:predict"]
    stored = target.read_key_set("keyed")["keys"][0]
    assert stored["sha256"] == hash_key(key) and key not in json.dumps(target.read_key_set("keyed"))
    listed = _cli("keys", "list", "keyed", "-t", "local", "--port", port)
    assert key_id in listed.stdout and "digits:predict" in listed.stdout and "20/s" in listed.stdout
    assert key not in listed.output and stored["sha256"] not in listed.output
    r = _cli("keys", "revoke", "keyed", key_id, "-t", "local", "--port", port)
    assert r.exit_code == 0 and target.read_key_set("keyed")["keys"] == []
    again = _cli("keys", "revoke", "keyed", key_id, "-t", "local", "--port", port)
    assert again.exit_code != 0 and f"no key '{key_id}'" in again.output and "Traceback" not in again.output


@pytest.mark.parametrize("args, word", [
    (["--scope", "digits"], "MODEL:ROUTE"),
    (["--scope", "digits:train"], "MODEL:ROUTE"),
    (["--scope", "digits:predict", "--expires", "soon"], "--expires"),
    (["--scope", "digits:predict", "--rate", "fast"], "--rate"),
    ([], "--scope"),
])
def test_key_mistakes_are_one_sentence(rest_api, tmp_path, monkeypatch, args, word):
    monkeypatch.chdir(tmp_path)
    _publish(rest_api.server_address[1], "keyed2")
    r = _cli("keys", "create", "keyed2", *args, "-t", "local", "--port", str(rest_api.server_address[1]))
    assert r.exit_code != 0 and word in r.output and "Traceback" not in r.output


def test_keys_of_a_function_that_does_not_exist(rest_api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _cli("keys", "list", "nobody", "-t", "local", "--port", str(rest_api.server_address[1]))
    assert r.exit_code != 0 and "'nobody' does not exist" in r.output


@pytest.mark.docker
@pytest.mark.slow
def test_local_web_action_demands_a_key_and_revocation_reaches_it(auth_image, local_api, capfd):
    from mlfn import releases as lib
    from mlfn.keys import create_key, revoke_key

    opts, target = _publish(local_api.server_address[1], "digits-auth", auth_image.image, web=True)
    created = create_key(target, "digits-auth", ["digits:predict"])
    url = lib.status("digits-auth", opts).aliases[0].web_url
    png = (INPUTS / "digit-7.png").read_bytes()
    r = requests.post(url, data=png, headers={"Content-Type": "image/png"}, timeout=60)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.post(url, data=png, headers={"Content-Type": "image/png", "X-API-Key": created.key}, timeout=60)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "7"
    # a non-web invocation was authenticated by the platform: no key
    res = lib.invoke("digits-auth", {"image": base64.b64encode(png).decode()}, options=opts)
    assert res.result["predictions"][0]["label"] == "7"
    revoke_key(target, "digits-auth", created.info.id)
    r = requests.post(url, data=png, headers={"Content-Type": "image/png", "X-API-Key": created.key}, timeout=60)
    assert r.status_code == 401  # the next activation reads the new package parameter
    out, err = capfd.readouterr()  # the controller runs in-process: its log and the activations' are here
    assert created.key not in out + err and created.info.id


def test_a_dry_run_deploy_never_shows_the_key_set(rest_api):
    """The package keeps its parameters on every write; a dry run prints them redacted."""
    from mlfn import releases as lib
    from mlfn.keys import create_key
    from mlfn.targets.interface import VersionSpec
    from mlfn.targets.recording import Recorder
    from mlfn_runtime.api_keys import hash_key

    opts, target = _publish(rest_api.server_address[1], "keyed3")
    created = create_key(target, "keyed3", ["*:predict"])
    recorder = Recorder()
    dry = lib.open_target(None, opts, recorder)
    dry.publish(VersionSpec(function="keyed3", image="example/other:2", digest="", model_sha256="",
                            quantization="int8", pipeline_hash="", content_hash="other"))
    text = json.dumps(recorder.requests)
    assert "packages/keyed3" in text and "mlfn_auth" in text
    assert hash_key(created.key) not in text and created.key not in text


def test_keys_jwt_keeps_settings_and_public_keys_on_the_platform(rest_api, tmp_path, monkeypatch, material):
    monkeypatch.chdir(tmp_path)
    _, target = _publish(rest_api.server_address[1], "jwtfn")
    (tmp_path / "jwks.json").write_text(json.dumps(material.jwks))
    port = str(rest_api.server_address[1])
    r = _cli("keys", "jwt", "jwtfn", "--issuer", "https://issuer.test", "--audience", "digits", "--jwks", "jwks.json",
             "-t", "local", "--port", port)
    assert r.exit_code == 0, r.output
    doc = target.read_key_set("jwtfn")
    assert doc["jwt"] == {"issuer": "https://issuer.test", "audience": "digits"} and doc["jwks"] == material.jwks
    private = {"keys": [{**material.jwks["keys"][0], "d": "c2VjcmV0"}]}
    (tmp_path / "private.json").write_text(json.dumps(private))
    r = _cli("keys", "jwt", "jwtfn", "--jwks", "private.json", "-t", "local", "--port", port)
    assert r.exit_code != 0 and "public keys only" in r.output and "c2VjcmV0" not in r.output
