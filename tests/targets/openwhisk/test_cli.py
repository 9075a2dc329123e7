"""The deploy commands through click (CliRunner), against the local controller (without
Docker where no function runs: `rest_api`), and the `mlfn local` daemon."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mlfn.cli import main
from tests.targets.openwhisk.conftest import ACTION_IMAGE



@pytest.fixture
def project(tmp_path, fn_name, monkeypatch):
    """An mlfn.yaml whose 'build' yields the tiny action image (the image build itself is
    covered by the build tests and test_digits_e2e); each call may change the content."""
    (tmp_path / "mlfn.yaml").write_text(f"name: {fn_name}\ndeploy:\n  memory: 128\n  env: {{GREETING: hi}}\n")
    content = {"hash": "c1"}

    def fake_build(cfg, push=None, progress=None, **kw):
        return SimpleNamespace(image=ACTION_IMAGE, repo_digest=None, digest="sha256:" + content["hash"] * 16,
                               model_sha256="m-" + content["hash"], quantization="int8", pipeline_hash="p",
                               content_hash=content["hash"])

    import mlfn.image

    monkeypatch.setattr(mlfn.image, "build_image", fake_build)
    return SimpleNamespace(dir=tmp_path, name=fn_name, content=content)


def run(args, port, ok=True):
    r = CliRunner().invoke(main, [*args, "--port", str(port)] if args[0] != "invoke" else args,
                           catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.mark.docker
def test_deploy_canary_promote_rollback_delete(project, local_api, monkeypatch):
    port = local_api.server_address[1]
    monkeypatch.chdir(project.dir)
    r = run(["deploy", "-o", "json"], port)
    out = json.loads(r.stdout)
    assert out["version"]["name"] == "v1" and out["created"] and out["aliases"][0]["weights"] == {"v1": 100}
    assert not json.loads(run(["deploy", "-o", "json"], port).stdout)["created"]
    project.content["hash"] = "c2"
    out = json.loads(run(["deploy", "--alias", "default", "--weight", "20", "-o", "json"], port).stdout)
    assert out["version"]["name"] == "v2"
    assert {a["name"]: a["weights"] for a in out["aliases"]}["default"] == {"v1": 80, "v2": 20}
    st = json.loads(run(["status", "-o", "json"], port).stdout)
    assert [v["name"] for v in st["versions"]] == ["v1", "v2"]
    assert st["versions"][1]["model_sha256"] == "m-c2"
    text = run(["status"], port).stdout
    assert "v1=80 v2=20" in text and "default:20%" in text
    monkeypatch.setenv("MLFN_LOCAL_APIHOST", local_api.url)
    r = run(["invoke", f"{project.name}:v2", "--json", '{"x": 1}', "-o", "json"], port)
    res = json.loads(r.stdout)
    assert res["version"] == "v2" and res["result"]["value"] == {"x": 1}
    r = run(["promote", project.name, "v2", "-o", "json"], port)
    assert json.loads(r.stdout)["alias"]["weights"] == {"v2": 100}
    r = run(["traffic", project.name, "v1=30", "v2", "--alias", "ab"], port)
    assert "v1=30 v2=70" in r.stdout
    assert json.loads(run(["rollback", project.name, "-o", "json"], port).stdout)["alias"]["weights"] == \
        {"v1": 80, "v2": 20}
    r = run(["delete", project.name, "v1"], port, ok=False)
    assert r.exit_code != 0 and "routed by alias" in r.stderr
    r = run(["traffic", project.name, "v1=50", "v2=60"], port, ok=False)
    assert r.exit_code == 2 and "sum to 110" in r.stderr
    r = run(["delete", project.name, "--yes", "-o", "json"], port)
    assert project.name in json.loads(r.stdout)["deleted"]
    r = run(["versions", project.name], port, ok=False)
    assert r.exit_code != 0 and "does not exist" in r.stderr


def test_deploy_dry_run_changes_nothing_and_hides_secrets(project, rest_api, monkeypatch):
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    r = run(["deploy", "--dry-run", "--web", "--web-secure", "-o", "json"], port)
    out = json.loads(r.stdout)
    assert out["dry_run"] and {q["method"] for q in out["requests"]} == {"PUT"}
    assert "***" in r.stdout and out["web_secret"]  # shown once to the user, never inside the requests
    assert out["web_secret"] not in json.dumps(out["requests"])
    r = run(["versions", project.name], port, ok=False)
    assert "does not exist" in r.stderr


def test_openwhisk_flags_and_wskprops(project, rest_api, monkeypatch, tmp_path):
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH

    monkeypatch.chdir(project.dir)
    props = tmp_path / "wskprops"
    props.write_text(f"APIHOST={rest_api.url}\nAUTH={GUEST_AUTH}\nNAMESPACE=guest\n")
    monkeypatch.setenv("WSK_CONFIG_FILE", str(props))
    r = CliRunner().invoke(main, ["deploy", "-t", "openwhisk", "--web"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert GUEST_AUTH.split(":")[1] not in r.output
    assert f"web: {rest_api.url}/api/v1/web/guest/{project.name}/default" in r.stdout
    r = CliRunner().invoke(main, ["status", project.name, "-t", "openwhisk", "--auth", "nope:nope"])
    assert r.exit_code == 1 and "rejected the credentials" in r.stderr


@pytest.mark.docker
def test_local_daemon_up_status_down(tmp_path):
    env = {**os.environ, "MLFN_LOCAL_HOME": str(tmp_path)}
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = [sys.executable, "-m", "mlfn.cli"]
    try:
        r = subprocess.run(cli + ["local", "up", "--port", str(port), "-o", "json"], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["running"] and st["apihost"] == f"http://127.0.0.1:{port}"
        again = subprocess.run(cli + ["local", "up", "--port", str(port)], env=env, capture_output=True, text=True)
        assert "already running" in again.stdout
        assert (tmp_path / "server.log").exists()
    finally:
        r = subprocess.run(cli + ["local", "down", "-o", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["running"] is False
    st = subprocess.run(cli + ["local", "status", "-o", "json"], env=env, capture_output=True, text=True)
    assert json.loads(st.stdout)["running"] is False


def test_unknown_versions_in_a_split_are_named(project, rest_api, monkeypatch):
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    run(["deploy"], port)
    r = run(["traffic", project.name, "v1=50", "v9=50", "-o", "json"], port, ok=False)
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["exit_code"] == 1
    assert f"v9 of '{project.name}' does not exist; existing versions: v1." in r.stderr
    r = run(["promote", project.name, "v8"], port, ok=False)
    assert f"v8 of '{project.name}' does not exist" in r.stderr
    r = run(["traffic", project.name, "v8=50", "v9=50"], port, ok=False)
    assert f"v8, v9 of '{project.name}' do not exist" in r.stderr
    run(["delete", project.name, "--yes"], port)


@pytest.mark.docker
def test_local_port_mismatches_are_named(tmp_path):
    """`--port` on local up/status/down and on the deploy commands is checked against the
    port the controller of MLFN_LOCAL_HOME runs on, instead of being ignored."""
    import socket

    env = {**os.environ, "MLFN_LOCAL_HOME": str(tmp_path)}
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    port, other = ports
    cli = [sys.executable, "-m", "mlfn.cli"]

    def mlfn(*args):
        return subprocess.run(cli + list(args), env=env, capture_output=True, text=True, timeout=60)

    try:
        r = mlfn("local", "up", "--port", str(port))
        assert r.returncode == 0, r.stderr
        r = mlfn("local", "up", "--port", str(other), "-o", "json")
        assert r.returncode == 1 and json.loads(r.stdout)["error"]["exit_code"] == 1
        assert f"runs on http://127.0.0.1:{port}, not on port {other}; stop it first" in r.stderr
        r = mlfn("local", "status", "--port", str(other))
        assert r.returncode == 1 and f"not on port {other}" in r.stderr
        assert mlfn("local", "status", "--port", str(port)).returncode == 0
        r = mlfn("status", "nofunc", "--port", str(other))
        assert r.returncode == 1 and f"(pass --port {port})" in r.stderr and "Traceback" not in r.stderr
        r = mlfn("local", "down", "--port", str(other))
        assert r.returncode == 1 and f"not on port {other}" in r.stderr
        assert json.loads(mlfn("local", "status", "-o", "json").stdout)["running"] is True
    finally:
        r = mlfn("local", "down", "--port", str(port), "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["running"] is False


def test_before_is_what_the_command_replaced_and_status_says_rollback_to(project, rest_api, monkeypatch):
    """Issue 12 item 3: after traffic 50/50 and promote v2, rollback replaced v2=100."""
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    run(["deploy"], port)
    project.content["hash"] = "c2"
    run(["deploy"], port)
    run(["traffic", project.name, "v1=50", "v2=50"], port)
    r = run(["promote", project.name, "v2"], port)
    assert "default: v2=100   (before: v1=50 v2=50)   (rollback to: v1=50 v2=50)" in r.stdout
    r = run(["rollback", project.name], port)
    assert "default: v1=50 v2=50   (before: v2=100)   (rollback to: v1=100)" in r.stdout
    out = json.loads(run(["rollback", project.name, "-o", "json"], port).stdout)
    assert out["replaced"] == {"v1": 50, "v2": 50} and out["alias"]["weights"] == {"v1": 100}
    r = run(["traffic", project.name, "v2=100", "--alias", "fresh"], port)
    assert "fresh: v2=100   (before: no such alias)" in r.stdout
    text = run(["status", project.name], port).stdout
    assert "ROLLBACK TO" in text and "PREVIOUS" not in text
    run(["delete", project.name, "--yes"], port)


def test_deleting_everything_needs_yes_off_a_terminal(project, rest_api, monkeypatch):
    """Issue 12 item 10: `mlfn delete NAME` asks on a terminal, and needs --yes elsewhere."""
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    run(["deploy"], port)
    r = run(["delete", project.name, "-o", "json"], port, ok=False)  # CliRunner's stdin is no terminal
    assert r.exit_code == 2 and json.loads(r.stdout)["error"]["exit_code"] == 2 and "pass --yes to confirm" in r.stderr
    assert json.loads(run(["versions", project.name, "-o", "json"], port).stdout)[0]["name"] == "v1"
    r = run(["delete", project.name, "--dry-run"], port)  # a dry run deletes nothing: no question
    assert "DELETE" in r.stdout
    r = run(["delete", project.name, "--yes", "-o", "json"], port)
    assert project.name in json.loads(r.stdout)["deleted"]
