"""`mlfn deploy --trigger/--feed`, `mlfn status`, `mlfn delete` and `mlfn render` with
triggers, through click: the local controller (OpenWhisk triggers and rules) and the
Kubernetes test API server (Knative Triggers)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import requests
import yaml
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.targets.knative.validate import validate_trigger
from mlfn.targets.openwhisk.wskprops import GUEST_AUTH
from tests.targets.knative.conftest import NS
from tests.targets.openwhisk.conftest import ACTION_IMAGE
from tests.targets.openwhisk.test_cli import project, run  # noqa: F401 (fixture)

AUTH = tuple(GUEST_AUTH.split(":", 1))


def _api(server, path):
    return f"{server.url}/api/v1/namespaces/_/{path}"


def test_deploy_trigger_status_and_delete_on_local(project, rest_api, monkeypatch):
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    trig = f"{project.name}-uploads"
    out = json.loads(run(["deploy", "--trigger", trig, "-o", "json"], port).stdout)
    assert out["triggers"] == [{"name": trig, "alias": "default", "kind": "rule", "detail": {
        "rule": f"{trig}--{project.name}--default", "status": "active", "feed": None}}]
    rule = requests.get(_api(rest_api, f"rules/{trig}--{project.name}--default"), auth=AUTH, timeout=10).json()
    assert rule["action"] == {"path": f"guest/{project.name}", "name": "default"}
    text = run(["status", project.name], port).stdout
    assert "TRIGGERS" in text and f"{trig} -> default (rule {trig}--{project.name}--default, active)" in text
    st = json.loads(run(["status", project.name, "-o", "json"], port).stdout)
    assert [t["name"] for t in st["triggers"]] == [trig]
    run(["deploy", "--trigger", trig], port)  # again: nothing new
    assert len(json.loads(run(["status", project.name, "-o", "json"], port).stdout)["triggers"]) == 1
    dry = run(["delete", project.name, "--dry-run", "-o", "json"], port).stdout
    assert f"/rules/{trig}--{project.name}--default" in dry and f"/triggers/{trig}" in dry
    out = json.loads(run(["delete", project.name, "--yes", "-o", "json"], port).stdout)
    assert out["deleted"][0] == f"trigger {trig}"
    assert requests.get(_api(rest_api, f"triggers/{trig}"), auth=AUTH, timeout=10).status_code == 404
    assert requests.get(_api(rest_api, f"rules/{trig}--{project.name}--default"), auth=AUTH, timeout=10).status_code == 404


@pytest.mark.parametrize("args,needle", [
    (["--feed", "/whisk.system/messaging/messageHubFeed"], "exactly one --trigger"),
    (["--trigger", "a", "--feed", "messageHubFeed"], "in full"),
    (["--trigger", "a", "--feed", "/x/y", "--feed-param", "topic"], "KEY=VALUE"),
    (["--trigger", "broker=default", "--feed", "/x/y"], "OpenWhisk trigger name"),
    (["--trigger", "bad name!"], "not a trigger name"),
])
def test_bad_trigger_options_fail_before_building(project, rest_api, monkeypatch, args, needle):
    import mlfn.image

    def no_build(*a, **kw):
        raise AssertionError("built although the options were wrong")

    monkeypatch.setattr(mlfn.image, "build_image", no_build)
    monkeypatch.chdir(project.dir)
    r = run(["deploy", *args], rest_api.server_address[1], ok=False)
    assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.output


def _feed_package(server, project) -> str:
    """A package `<project>-feeds` holding a `kafka` feed action; returns the package name."""
    feed_pkg = f"{project.name}-feeds"
    requests.put(_api(server, f"packages/{feed_pkg}"), json={}, auth=AUTH, timeout=10).raise_for_status()
    requests.put(_api(server, f"actions/{feed_pkg}/kafka"), json={"exec": {"kind": "blackbox", "image": ACTION_IMAGE}},
                 auth=AUTH, timeout=10).raise_for_status()
    return feed_pkg


def test_a_feed_that_fails_leaves_no_trigger(project, rest_api, monkeypatch):
    """The controller without Docker cannot run the feed action: the trigger is removed again."""
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    feed_pkg = _feed_package(rest_api, project)
    r = run(["deploy", "--trigger", f"{project.name}-k", "--feed", f"/guest/{feed_pkg}/kafka"], port, ok=False)
    assert r.exit_code == 1 and f"The feed action /guest/{feed_pkg}/kafka refused CREATE" in r.stderr
    assert GUEST_AUTH.split(":")[1] not in r.output
    assert requests.get(_api(rest_api, f"triggers/{project.name}-k"), auth=AUTH, timeout=10).status_code == 404


@pytest.mark.docker
def test_feed_trigger_invokes_the_feed_action_on_create_and_delete(project, local_api, monkeypatch):
    port = local_api.server_address[1]
    monkeypatch.chdir(project.dir)
    feed_pkg = _feed_package(local_api, project)
    trig = f"{project.name}-k"
    r = run(["deploy", "--trigger", trig, "--feed", f"/guest/{feed_pkg}/kafka", "--feed-param", "topic=images",
             "-o", "json"], port)
    assert json.loads(r.stdout)["triggers"][0]["detail"]["feed"] == f"/guest/{feed_pkg}/kafka"
    assert GUEST_AUTH.split(":")[1] not in r.output
    trigger = requests.get(_api(local_api, f"triggers/{trig}"), auth=AUTH, timeout=10).json()
    assert {"key": "feed", "value": f"/guest/{feed_pkg}/kafka"} in trigger["annotations"]
    run(["delete", project.name, "--yes"], port)
    acts = requests.get(_api(local_api, f"activations?name={feed_pkg}/kafka&docs=true"), auth=AUTH, timeout=10).json()
    events = sorted((a["response"]["result"]["value"]["lifecycleEvent"], a["response"]["result"]["value"]["triggerName"],
                     a["response"]["result"]["value"].get("topic")) for a in acts)
    assert events == [("CREATE", f"/guest/{trig}", "images"), ("DELETE", f"/guest/{trig}", None)]
    assert all(a["response"]["result"]["value"]["authKey"] == GUEST_AUTH for a in acts)


@pytest.fixture
def kn_project(tmp_path, monkeypatch):
    (tmp_path / "mlfn.yaml").write_text("name: digits\ndeploy:\n  target: knative\n  registry: registry.example.com/d\n")
    digest = "sha256:" + "e" * 64

    def fake_build(cfg, push=None, progress=None, **kw):
        return SimpleNamespace(image="registry.example.com/d:x", repo_digest=f"registry.example.com/d@{digest}",
                               digest=digest, model_sha256="m", quantization="int8", pipeline_hash="p",
                               content_hash="k1")

    import mlfn.image

    monkeypatch.setattr(mlfn.image, "build_image", fake_build)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_knative_deploy_status_delete_with_a_trigger(kn_project, api, kubeconfig):
    k = ["--kubeconfig", kubeconfig]
    trigger = "broker=default,type=com.example.image.uploaded,source=/bucket,retry=3,deadLetterSink=http://dlq"
    r = CliRunner().invoke(main, ["deploy", "--trigger", trigger, *k, "-o", "json"])
    assert r.exit_code == 0, r.output
    (made,) = json.loads(r.stdout)["triggers"]
    stored = api.kube.objects[("triggers", NS, made["name"])]
    assert stored["spec"]["subscriber"]["ref"]["name"] == "digits" and stored["spec"]["delivery"]["retry"] == 3
    r = CliRunner().invoke(main, ["status", "digits", "-t", "knative", *k])
    assert r.exit_code == 0 and f"{made['name']} -> default (broker default, type=com.example.image.uploaded" in r.stdout
    r = CliRunner().invoke(main, ["delete", "digits", "--yes", "-t", "knative", *k])
    assert r.exit_code == 0, r.output
    assert not [key for key in api.kube.objects if key[0] == "triggers"]


def test_render_writes_the_trigger_beside_the_service(tmp_path):
    (tmp_path / "mlfn.yaml").write_text("name: digits\ndeploy:\n  target: knative\n  knative:\n    namespace: prod\n")
    image = "registry.example.com/mlfn/digits@sha256:" + "1" * 64
    r = CliRunner().invoke(main, ["render", "-c", str(tmp_path / "mlfn.yaml"), "--image", image, "--out",
                                  str(tmp_path / "out"), "--trigger", "broker=default,type=t,name=uploads"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["digits.knative.yaml", "digits.trigger.uploads.yaml"]
    doc = yaml.safe_load((tmp_path / "out" / "digits.trigger.uploads.yaml").read_text())
    validate_trigger(doc)
    assert doc["metadata"]["namespace"] == "prod" and doc["spec"]["filter"] == {"attributes": {"type": "t"}}


def test_dry_run_deploy_with_a_feed_trigger_sends_nothing_and_hides_the_key(project, rest_api, monkeypatch):
    port = rest_api.server_address[1]
    monkeypatch.chdir(project.dir)
    trig = f"{project.name}-dry"
    r = run(["deploy", "--dry-run", "--trigger", trig, "--feed", "/whisk.system/messaging/messageHubFeed",
             "--feed-param", "topic=images", "-o", "json"], port)
    out = json.loads(r.stdout)
    calls = [(q["method"], q["url"].split("/api/v1/namespaces/")[1]) for q in out["requests"]]
    assert ("PUT", f"guest/triggers/{trig}?overwrite=false") in calls
    assert ("POST", "whisk.system/actions/messaging/messageHubFeed?blocking=true&result=true") in calls
    assert ("PUT", f"guest/rules/{trig}--{project.name}--default?overwrite=true") in calls
    feed = next(q["body"] for q in out["requests"] if q["method"] == "POST")
    assert feed == {"topic": "images", "lifecycleEvent": "CREATE", "triggerName": "/guest/" + trig, "authKey": "***"}
    assert GUEST_AUTH.split(":")[1] not in r.output
    assert requests.get(_api(rest_api, f"triggers/{trig}"), auth=AUTH, timeout=10).status_code == 404


def test_render_for_openwhisk_says_triggers_are_made_by_deploy(tmp_path):
    (tmp_path / "mlfn.yaml").write_text("name: digits\n")
    r = CliRunner().invoke(main, ["render", "-t", "openwhisk", "-c", str(tmp_path / "mlfn.yaml"), "--image",
                                  "registry.example.com/d:1", "--out", str(tmp_path / "out"), "--trigger", "t1"])
    assert r.exit_code == 2 and "knative target only" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
