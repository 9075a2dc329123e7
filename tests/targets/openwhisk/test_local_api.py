"""The local controller speaks OpenWhisk's REST API: shapes validated against
apiv1swagger.json (REST-only tests run the controller without Docker: `rest_api`), and
action-protocol semantics with real containers (marked docker)."""
from __future__ import annotations

import base64
import time

import pytest
import requests

from mlfn.targets.openwhisk.wskprops import GUEST_AUTH
from tests.targets.openwhisk.conftest import ACTION_IMAGE

AUTH = tuple(GUEST_AUTH.split(":", 1))


def api(local_api, path):
    return f"{local_api.url}/api/v1/namespaces/guest/{path}"


def make_package(local_api, fn_name, action_image, swagger):
    """A package named fn_name; returns put(name, annotations, **extra) that adds an action."""
    body = {"annotations": [{"key": "k", "value": 1}], "parameters": [{"key": "p", "value": "pkg"}]}
    swagger.validate(body, "PackagePut")
    r = requests.put(api(local_api, f"packages/{fn_name}"), json=body, auth=AUTH)
    assert r.status_code == 200
    swagger.validate(r.json(), "Package")

    def put(name, annotations=(), **extra):
        body = {"exec": {"kind": "blackbox", "image": action_image}, "annotations": list(annotations),
                "limits": {"timeout": 3000, "memory": 128}, **extra}
        swagger.validate(body, "ActionPut")
        r = requests.put(api(local_api, f"actions/{fn_name}/{name}?overwrite=true"), json=body, auth=AUTH)
        assert r.status_code == 200, r.text
        swagger.validate(r.json(), "Action")
        return r.json()

    put.name = fn_name
    return put


@pytest.fixture
def pkg(local_api, fn_name, action_image, swagger):
    return make_package(local_api, fn_name, action_image, swagger)


@pytest.fixture
def rest_pkg(rest_api, fn_name, swagger):
    return make_package(rest_api, fn_name, ACTION_IMAGE, swagger)


def test_auth_is_required(rest_api):
    assert requests.get(api(rest_api, "actions"), timeout=5).status_code == 401
    r = requests.get(api(rest_api, "actions"), auth=("guest", "wrong"), timeout=5)
    assert r.status_code == 401 and "error" in r.json()
    r = requests.get(f"{rest_api.url}/api/v1/namespaces", auth=AUTH)
    assert r.json() == ["guest"]


@pytest.mark.docker
def test_blocking_invoke_activation_record_and_logs(local_api, pkg, swagger):
    pkg("echo", parameters=[{"key": "fromaction", "value": 1}])
    url = api(local_api, f"actions/{pkg.name}/echo")
    r = requests.post(url + "?blocking=true", json={"x": 1}, auth=AUTH)
    assert r.status_code == 200
    act = r.json()
    swagger.validate(act, "Activation")
    assert r.headers["x-openwhisk-activation-id"] == act["activationId"]
    # package and action parameters are merged under the payload
    assert act["response"]["result"]["value"] == {"p": "pkg", "fromaction": 1, "x": 1}
    ann = {a["key"]: a["value"] for a in act["annotations"]}
    assert ann["path"] == f"guest/{pkg.name}/echo" and "initTime" in ann and "waitTime" in ann
    assert any("stdout: run " + act["activationId"] in line for line in act["logs"])
    # warm: no initTime, same container
    r2 = requests.post(url + "?blocking=true&result=true", json={"y": 2}, auth=AUTH)
    assert r2.status_code == 200 and r2.json()["value"]["y"] == 2
    aid2 = r2.headers["x-openwhisk-activation-id"]
    got = requests.get(api(local_api, f"activations/{aid2}"), auth=AUTH).json()
    swagger.validate(got, "Activation")
    assert "initTime" not in {a["key"] for a in got["annotations"]}
    logs = requests.get(api(local_api, f"activations/{aid2}/logs"), auth=AUTH).json()
    swagger.validate(logs, "ActivationLogs")
    assert len(logs["logs"]) == 1  # exactly this activation's line, up to the sentinel
    res = requests.get(api(local_api, f"activations/{aid2}/result"), auth=AUTH).json()
    swagger.validate(res, "ActivationResult")
    brief = requests.get(api(local_api, f"activations?name={pkg.name}/echo&limit=5"), auth=AUTH).json()
    assert [b["activationId"] for b in brief[:2]] == [aid2, act["activationId"]]
    for b in brief:
        swagger.validate(b, "ActivationBrief")
    for a in requests.get(api(local_api, "actions?limit=50"), auth=AUTH).json():
        swagger.validate(a, "ActionMeta")
    for p in requests.get(api(local_api, "packages"), auth=AUTH).json():
        swagger.validate(p, "Package")
    swagger.validate(requests.get(url, auth=AUTH).json(), "Action")


@pytest.mark.docker
def test_errors_map_to_502_and_the_container_keeps_serving(local_api, pkg):
    pkg("e")
    url = api(local_api, f"actions/{pkg.name}/e?blocking=true")
    r = requests.post(url, json={"fail": "bad input"}, auth=AUTH)
    assert r.status_code == 502
    assert r.json()["response"]["status"] == "application error"
    assert r.json()["response"]["result"] == {"error": "bad input"}
    r = requests.post(url, json={"crash": True}, auth=AUTH)
    assert r.status_code == 502 and r.json()["response"]["status"] == "action developer error"
    assert requests.post(url, json={"ok": 1}, auth=AUTH).status_code == 200


@pytest.mark.docker
def test_timeouts_202_and_nonblocking(local_api, pkg):
    pkg("slow")
    url = api(local_api, f"actions/{pkg.name}/slow")
    r = requests.post(url, json={}, auth=AUTH)  # warm it up, non-blocking
    assert r.status_code == 202 and r.json()["activationId"] == r.headers["x-openwhisk-activation-id"]
    r = requests.post(url + "?blocking=true&timeout=200", json={"sleep": 1}, auth=AUTH)
    assert r.status_code == 202
    aid = r.json()["activationId"]
    for _ in range(50):
        got = requests.get(api(local_api, f"activations/{aid}"), auth=AUTH)
        if got.status_code == 200:
            break
        time.sleep(0.1)
    assert got.json()["response"]["success"] is True
    # past the action's own time limit (3 s): developer error, container replaced
    r = requests.post(url + "?blocking=true", json={"sleep": 4}, auth=AUTH)
    assert r.status_code == 502 and "time limit" in r.json()["response"]["result"]["error"]


def test_entity_rules(rest_api, rest_pkg):
    rest_pkg("a")
    url = api(rest_api, f"actions/{rest_pkg.name}/a")
    r = requests.put(url + "?overwrite=false", json={"exec": {"kind": "blackbox", "image": "x"}}, auth=AUTH)
    assert r.status_code == 409
    r = requests.put(api(rest_api, f"actions/{rest_pkg.name}/b"), json={"exec": {"kind": "blackbox", "image": "x"},
                                                                      "limits": {"memory": 4096}}, auth=AUTH)
    assert r.status_code == 400 and "memory" in r.json()["error"]
    r = requests.delete(api(rest_api, f"packages/{rest_pkg.name}"), auth=AUTH)
    assert r.status_code == 409  # not empty
    assert requests.delete(url, auth=AUTH).status_code == 200
    assert requests.get(url, auth=AUTH).status_code == 404
    assert requests.delete(api(rest_api, f"packages/{rest_pkg.name}"), auth=AUTH).status_code == 200


@pytest.mark.docker
def test_web_action_with_secret(local_api, pkg):
    pkg("w", annotations=[{"key": "web-export", "value": True}, {"key": "require-whisk-auth", "value": "s3cret"}])
    pkg("private")
    web = f"{local_api.url}/api/v1/web/guest/{pkg.name}"
    assert requests.post(f"{web}/w.json", json={"a": 1}).status_code == 401
    r = requests.post(f"{web}/w.json?q=2", json={"a": 1}, headers={"X-Require-Whisk-Auth": "s3cret"})
    assert r.status_code == 200
    value = r.json()["value"]
    assert value["a"] == 1 and value["q"] == "2" and value["__ow_method"] == "post"
    assert "x-require-whisk-auth" not in value["__ow_headers"]
    r = requests.post(f"{web}/w.json", data=b"\x89PNG", headers={"X-Require-Whisk-Auth": "s3cret",
                                                                  "Content-Type": "image/png"})
    assert base64.b64decode(r.json()["value"]["__ow_body"]) == b"\x89PNG"
    r = requests.post(f"{web}/w.json", data={"name": "Jane"}, headers={"X-Require-Whisk-Auth": "s3cret"})
    assert r.json()["value"]["name"] == "Jane"  # form fields become parameters
    r = requests.post(f"{web}/w.json", json={"fail": "no"}, headers={"X-Require-Whisk-Auth": "s3cret"})
    assert r.status_code == 400 and r.json()["error"] == "no"
    assert requests.post(f"{web}/private.json", json={}).status_code == 404


@pytest.mark.docker
def test_state_survives_a_restart(tmp_path, action_image):
    import threading

    from mlfn.targets.local.api import close, make_server

    server, ctl = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/namespaces/_/"
    requests.put(url + "actions/keep", json={"exec": {"kind": "blackbox", "image": action_image}}, auth=AUTH)
    aid = requests.post(url + "actions/keep?blocking=true", json={}, auth=AUTH).json()["activationId"]
    close(server, ctl)
    server, ctl = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/namespaces/_/"
    try:
        assert requests.get(url + "actions/keep", auth=AUTH).json()["exec"]["image"] == action_image
        assert requests.get(url + f"activations/{aid}", auth=AUTH).status_code == 200
    finally:
        close(server, ctl)


@pytest.mark.docker
def test_idle_containers_are_removed(tmp_path, action_image):
    import threading

    import docker

    from mlfn.targets.local.pool import OWNER_LABEL
    from mlfn.targets.local.api import close, make_server
    from mlfn.targets.local.home import owner_id

    server, ctl = make_server(tmp_path, port=0, idle_seconds=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/namespaces/_/"
    labels = {"label": [f"{OWNER_LABEL}={owner_id(tmp_path)}"]}
    try:
        requests.put(url + "actions/idle", json={"exec": {"kind": "blackbox", "image": action_image}}, auth=AUTH)
        assert requests.post(url + "actions/idle?blocking=true", json={}, auth=AUTH).status_code == 200
        assert len(docker.from_env().containers.list(filters=labels)) == 1
        for _ in range(50):
            if not docker.from_env().containers.list(all=True, filters=labels):
                break
            time.sleep(0.1)
        assert not docker.from_env().containers.list(all=True, filters=labels)
        r = requests.post(url + "actions/idle?blocking=true", json={}, auth=AUTH)  # cold again
        assert "initTime" in {a["key"] for a in r.json()["annotations"]}
    finally:
        close(server, ctl)
