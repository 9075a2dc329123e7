"""OpenWhisk client pieces that need no server: credentials, naming, splits, dry runs,
the router code, the wskdeploy manifest."""
from __future__ import annotations

import collections
import json
import random

import pytest
import yaml

from mlfn.errors import ConfigError, TargetError
from mlfn.traffic import TrafficError
from tests.targets.openwhisk.conftest import spec


def test_wskprops_file_env_and_flags(tmp_path, monkeypatch):
    from mlfn.targets.openwhisk.wskprops import load_wskprops

    f = tmp_path / "props"
    f.write_text("# comment\nAPIHOST=ow.example.com\nAUTH=abc:def\nNAMESPACE=team\n")
    monkeypatch.setenv("WSK_CONFIG_FILE", str(f))
    for k in ("__OW_API_HOST", "__OW_API_KEY", "__OW_NAMESPACE"):
        monkeypatch.delenv(k, raising=False)
    p = load_wskprops()
    assert p.base_url == "https://ow.example.com"  # no scheme means https
    assert p.credentials == ("abc", "def") and p.namespace == "team"
    assert "def" not in repr(p)  # AUTH never shows up
    p = load_wskprops(apihost="http://10.0.0.1:3233", namespace="other")
    assert p.base_url == "http://10.0.0.1:3233" and p.namespace == "other"


def test_wskprops_missing_values_are_clear(tmp_path, monkeypatch):
    from mlfn.targets.openwhisk.wskprops import load_wskprops

    monkeypatch.setenv("WSK_CONFIG_FILE", str(tmp_path / "none"))
    for k in ("__OW_API_HOST", "__OW_API_KEY", "__OW_NAMESPACE"):
        monkeypatch.delenv(k, raising=False)
    p = load_wskprops()
    with pytest.raises(ConfigError, match="APIHOST"):
        p.base_url
    p = load_wskprops(apihost="h", auth="nocolon")
    with pytest.raises(ConfigError, match="uuid:key"):
        p.credentials


def test_split_for_keeps_the_rest_on_current_versions():
    from mlfn.aliases import split_for

    assert split_for("v3", 10, {"v1": 100}) == {"v1": 90, "v3": 10}
    assert split_for("v3", 10, {"v1": 50, "v2": 50}) == {"v1": 45, "v2": 45, "v3": 10}
    assert split_for("v4", 25, {"v1": 1, "v2": 1, "v3": 1}) == {"v1": 25, "v2": 25, "v3": 25, "v4": 25}
    assert sum(split_for("v4", 7, {"v1": 33, "v2": 33, "v3": 34}).values()) == 100
    assert split_for("v2", 100, None) == {"v2": 100}
    with pytest.raises(TrafficError, match="remaining 90%"):
        split_for("v1", 10, None)


def test_parse_ref():
    from mlfn.releases import parse_ref

    assert parse_ref("digits") == ("digits", None, None)
    assert parse_ref("digits@canary") == ("digits", "canary", None)
    assert parse_ref("digits:v3") == ("digits", None, "v3")
    with pytest.raises(ConfigError):
        parse_ref("digits:3")


def test_factory_rejects_unknown_target_and_foreign_options():
    from mlfn.targets.factory import get_target

    with pytest.raises(ConfigError, match="Unknown target"):
        get_target("lambda")
    with pytest.raises(ConfigError, match="--kubeconfig"):
        get_target("openwhisk", None, kubeconfig="x")


def test_alias_names_cannot_look_like_versions():
    from mlfn.targets.openwhisk.codec import check_alias_name

    with pytest.raises(TargetError, match="version name"):
        check_alias_name("v2")
    with pytest.raises(TargetError):
        check_alias_name("bad/alias")
    # valid OpenWhisk entity names, but not callable as NAME@ALIAS
    for name in ("Bad Name", "a@b", "x&y"):
        with pytest.raises(TargetError, match="letters, digits, '.', '-' and '_'"):
            check_alias_name(name)
    assert check_alias_name("canary") == "canary" and check_alias_name("ab_test-2.1") == "ab_test-2.1"


def offline_lifecycle():
    """A dry run with no OpenWhisk endpoint configured: plans offline."""
    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.openwhisk.target import openwhisk_target
    from mlfn.targets.openwhisk.wskprops import WskProps
    from mlfn.targets.recording import Recorder

    recorder = Recorder()
    return Lifecycle(openwhisk_target(props=WskProps(), recorder=recorder), recorder)


def test_dry_run_offline_plans_package_version_and_alias(swagger):
    out = offline_lifecycle().publish(spec("fn", "a", env={"LOG_LEVEL": "debug"}))
    reqs = out.requests
    assert [r["method"] for r in reqs] == ["PUT", "PUT", "PUT"]
    assert reqs[0]["url"].endswith("/packages/fn?overwrite=true")
    assert reqs[1]["url"].endswith("/actions/fn/v1?overwrite=false")
    assert reqs[2]["url"].endswith("/actions/fn/default?overwrite=true")
    swagger.validate(reqs[0]["body"], "PackagePut")
    for r in reqs[1:]:
        swagger.validate(r["body"], "ActionPut")
    v1 = reqs[1]["body"]
    assert v1["exec"] == {"kind": "blackbox", "image": "mlfnow-test-action:1"}
    assert {"key": "LOG_LEVEL", "value": "debug", "init": True} in v1["parameters"]
    ann = {a["key"]: a["value"] for a in v1["annotations"]}
    assert ann["mlfn-content-hash"] == "a" and ann["mlfn-model-sha256"] == "ma"
    assert out.version.name == "v1" and out.created


def test_dry_run_redacts_the_web_secret():
    out = offline_lifecycle().set_traffic("fn", "web", {"v1": 100}, web=True, require_auth=True)
    body = out.requests[-1]["body"]
    ann = {a["key"]: a["value"] for a in body["annotations"]}
    assert ann["web-export"] is True and ann["require-whisk-auth"] == "***"
    assert out.web_secret and out.web_secret not in json.dumps(out.requests)


def test_a_weighted_alias_is_a_conductor_of_the_image_with_routes_and_no_code():
    """Issue 11 item 3: the alias sends no code (the function keeps code actions off); its init
    parameter MLFN_ALIAS_ROUTES is what the runtime conducts by, and 0% versions are left out."""
    from mlfn_runtime.router import conduct, parse_routes

    out = offline_lifecycle().set_traffic("fn", "canary", {"v1": 80, "v2": 20, "v3": 0})
    body = out.requests[-1]["body"]  # the conductor action, as it would be sent
    assert "code" not in body["exec"] and body["exec"]["kind"] == "blackbox"
    assert {"key": "conductor", "value": True} in body["annotations"]
    (param,) = [p for p in body["parameters"] if p["key"] == "MLFN_ALIAS_ROUTES"]
    assert param["init"] is True
    routes = parse_routes(param["value"])
    assert dict(routes) == {"/_/fn/v1": 80, "/_/fn/v2": 20}
    random.seed(7)
    counts = collections.Counter(conduct({"image": "x", "i": i}, routes)["action"] for i in range(2000))
    assert 1500 < counts["/_/fn/v1"] < 1700 and set(counts) == {"/_/fn/v1", "/_/fn/v2"}


def test_render_writes_a_wskdeploy_manifest(tmp_path):
    files = offline_lifecycle().target.render(spec("digits", "c"), str(tmp_path))
    doc = yaml.safe_load(open(files[0]))
    actions = doc["packages"]["digits"]["actions"]
    assert set(actions) == {"v1", "default"}
    assert actions["v1"]["docker"] == "mlfnow-test-action:1"
    assert actions["v1"]["limits"]["memorySize"] == 256
    assert actions["default"]["annotations"]["mlfn-weights"] == {"v1": 100}


def test_http_client_retries_then_names_the_host(monkeypatch):
    from mlfn.targets.http import HttpClient

    slept = []
    c = HttpClient(auth=("u", "secret-key"), attempts=3, sleep=slept.append, timeout=0.5)
    with pytest.raises(TargetError) as e:
        c.request("GET", "http://u:secret-key@127.0.0.1:9/api/v1?x=1")
    assert len(slept) == 2 and "127.0.0.1:9" in str(e.value) and "secret" not in str(e.value)


def test_render_command_needs_no_platform(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlfn.cli import main

    (tmp_path / "mlfn.yaml").write_text("name: digits\ndeploy:\n  memory: 512\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WSK_CONFIG_FILE", str(tmp_path / "none"))
    image = "reg.example/digits@sha256:" + "abc" * 21 + "d"
    r = CliRunner().invoke(main, ["render", "-t", "openwhisk", "--image", image,
                                  "--out", "deploy", "-o", "json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load((tmp_path / "deploy" / "manifest.yaml").read_text())
    v1 = doc["packages"]["digits"]["actions"]["v1"]
    assert v1["docker"] == image and v1["limits"]["memorySize"] == 512
    # an image reference no platform could pull is refused before anything is written
    for bad in ("reg.example/digits@sha256:abc", "Reg Example/digits", "reg.example/Digits:1"):
        r = CliRunner().invoke(main, ["render", "-t", "openwhisk", "--image", bad, "--out", "bad", "-o", "json"])
        assert r.exit_code == 2 and json.loads(r.stdout)["error"]["exit_code"] == 2 and "Traceback" not in r.output
        assert f"--image '{bad}' is not an image reference" in r.stderr
    assert not (tmp_path / "bad").exists()


def test_local_target_hint_when_not_running(monkeypatch, tmp_path):
    import socket

    from mlfn.targets.local.target import local_target

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFN_LOCAL_HOME", str(tmp_path))  # not a controller this machine may run in ~/.mlfn
    t = local_target(port=port, sleep=lambda s: None)
    with pytest.raises(TargetError, match="mlfn local up"):
        t.read("fn")


def test_dry_run_against_an_unreachable_host_says_it_plans_blind(caplog):
    import logging
    import socket

    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.openwhisk.target import openwhisk_target
    from mlfn.targets.openwhisk.wskprops import WskProps
    from mlfn.targets.recording import Recorder

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recorder = Recorder()
    t = openwhisk_target(props=WskProps(apihost=f"http://127.0.0.1:{port}", auth="a:secret", namespace="ns"),
                         recorder=recorder, sleep=lambda s: None)
    with caplog.at_level(logging.WARNING, logger="mlfn.targets.openwhisk.client"):
        out = Lifecycle(t, recorder).set_traffic("fn", "default", {"v1": 100})
    assert out.alias.weights == {"v1": 100} and out.requests
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"Cannot reach http://127.0.0.1:{port}/api/v1/namespaces/ns/" in warnings[0]
    assert warnings[0].endswith("the dry run plans as if nothing were deployed there.")
    assert "secret" not in warnings[0]
