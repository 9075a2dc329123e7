"""Triggers and rules on the local controller, as OpenWhisk has them: bodies and answers
validated against apiv1swagger.json, firing (202, 204 without an active rule, the
trigger's activation lists the rule activations), and a trigger bound to a 50/50 alias
through mlfn's OpenWhisk wiring (both versions serve, each activation recorded)."""
from __future__ import annotations

import collections
import json
import math
import time

import pytest
import requests

from mlfn.targets.events import TriggerSpec
from mlfn.targets.openwhisk.triggers import OpenWhiskTriggers
from mlfn.targets.openwhisk.wskprops import GUEST_AUTH
from tests.targets.openwhisk.conftest import ACTION_IMAGE, make_lifecycle, spec

AUTH = tuple(GUEST_AUTH.split(":", 1))


def api(server, path):
    return f"{server.url}/api/v1/namespaces/_/{path}"


def _put(server, swagger, path, body, definition_in, definition_out, status=200):
    swagger.validate(body, definition_in)
    r = requests.put(api(server, path), json=body, auth=AUTH, timeout=10)
    assert r.status_code == status, r.text
    if status == 200:
        swagger.validate(r.json(), definition_out)
    return r


def _publish_two(lifecycle, fn):
    lifecycle.publish(spec(fn, "a"))
    lifecycle.publish(spec(fn, "b"))


def test_trigger_and_rule_entities_follow_the_swagger(rest_api, swagger, fn_name):
    lifecycle = make_lifecycle(rest_api.url)
    lifecycle.publish(spec(fn_name, "a"))
    trig = f"{fn_name}-trig"
    _put(rest_api, swagger, f"triggers/{trig}", {"parameters": [{"key": "p", "value": 1}],
                                                   "annotations": [{"key": "a", "value": "b"}]}, "TriggerPut", "Trigger")
    _put(rest_api, swagger, f"triggers/{trig}", {}, "TriggerPut", "Trigger", status=409)
    rule = {"trigger": f"/_/{trig}", "action": f"/_/{fn_name}/default"}
    got = _put(rest_api, swagger, f"rules/{fn_name}-rule", rule, "RulePut", "Rule").json()
    assert got["status"] == "active" and got["action"] == {"path": f"guest/{fn_name}", "name": "default"}
    t = requests.get(api(rest_api, f"triggers/{trig}"), auth=AUTH, timeout=10).json()
    swagger.validate(t, "Trigger")
    assert t["rules"] == {f"guest/{fn_name}-rule": {"action": got["action"], "status": "active"}}
    for b in requests.get(api(rest_api, "triggers"), auth=AUTH, timeout=10).json():
        swagger.validate(b, "TriggerMeta")
    for b in requests.get(api(rest_api, "rules"), auth=AUTH, timeout=10).json():
        swagger.validate(b, "RuleMeta")
    r = requests.post(api(rest_api, f"rules/{fn_name}-rule"), json={"status": "inactive"}, auth=AUTH, timeout=10)
    assert r.status_code == 200
    rule_now = requests.get(api(rest_api, f"rules/{fn_name}-rule"), auth=AUTH, timeout=10).json()
    swagger.validate(rule_now, "Rule")
    assert rule_now["status"] == "inactive"
    fired = requests.post(api(rest_api, f"triggers/{trig}"), json={"x": 1}, auth=AUTH, timeout=10)
    assert fired.status_code == 204  # no active rule: nothing fires
    assert requests.delete(api(rest_api, f"rules/{fn_name}-rule"), auth=AUTH, timeout=10).status_code == 200
    assert requests.delete(api(rest_api, f"triggers/{trig}"), auth=AUTH, timeout=10).status_code == 200
    assert requests.get(api(rest_api, f"triggers/{trig}"), auth=AUTH, timeout=10).status_code == 404


@pytest.mark.parametrize("path,body,status", [
    ("rules/r1", {"trigger": "/_/nope", "action": "/_/x/default"}, 404),
    ("rules/r2", {"action": "/_/x/default"}, 400),
    ("rules/r3", {"trigger": "/other/t", "action": "/_/x/default"}, 400),
    ("triggers/bad name!", {}, 400),
    ("triggers/t1", [1], 400),
])
def test_bad_entities_are_refused(rest_api, path, body, status):
    r = requests.put(api(rest_api, path), json=body, auth=AUTH, timeout=10)
    assert r.status_code == status and r.json()["error"]


def test_rule_status_must_be_active_or_inactive(rest_api, swagger, fn_name):
    lifecycle = make_lifecycle(rest_api.url)
    lifecycle.publish(spec(fn_name, "a"))
    OpenWhiskTriggers(lifecycle.target.client).apply(fn_name, "default", TriggerSpec(name=f"{fn_name}-t"))
    rule = f"{fn_name}-t--{fn_name}--default"
    r = requests.post(api(rest_api, f"rules/{rule}"), json={"status": "paused"}, auth=AUTH, timeout=10)
    assert r.status_code == 400 and "status" in r.json()["error"]


def test_wiring_lists_and_deletes_a_functions_triggers(rest_api, fn_name):
    lifecycle = make_lifecycle(rest_api.url)
    lifecycle.publish(spec(fn_name, "a"))
    wiring = OpenWhiskTriggers(lifecycle.target.client)
    rec = wiring.apply(fn_name, "default", TriggerSpec(name=f"{fn_name}-up"))
    assert rec.to_dict() == {"name": f"{fn_name}-up", "alias": "default", "kind": "rule",
                             "rule": f"{fn_name}-up--{fn_name}--default", "status": "active", "feed": None}
    assert wiring.list(fn_name) == [rec]
    assert wiring.list(fn_name + "x") == []
    with pytest.raises(Exception, match="no alias 'canary'"):
        wiring.apply(fn_name, "canary", TriggerSpec(name=f"{fn_name}-up"))
    assert wiring.delete(fn_name) == [f"{fn_name}-up"]
    assert wiring.list(fn_name) == []
    assert requests.get(api(rest_api, f"triggers/{fn_name}-up"), auth=AUTH, timeout=10).status_code == 404


@pytest.mark.docker
def test_fire_a_trigger_bound_to_a_50_50_alias_200_times(local_api, swagger, fn_name):
    lifecycle = make_lifecycle(local_api.url)
    _publish_two(lifecycle, fn_name)
    lifecycle.set_traffic(fn_name, "ab", {"v1": 50, "v2": 50})
    OpenWhiskTriggers(lifecycle.target.client).apply(fn_name, "ab", TriggerSpec(name=f"{fn_name}-ev"))
    n = 200
    trigger_ids = []
    for i in range(n):
        r = requests.post(api(local_api, f"triggers/{fn_name}-ev"), json={"i": i}, auth=AUTH, timeout=10)
        assert r.status_code == 202, r.text
        swagger.validate(r.json(), "ActivationId")
        trigger_ids.append(r.json()["activationId"])
    versions = collections.Counter()
    deadline = time.monotonic() + 300
    for i, tid in enumerate(trigger_ids):
        trec = requests.get(api(local_api, f"activations/{tid}"), auth=AUTH, timeout=10).json()
        swagger.validate(trec, "Activation")
        assert trec["name"] == f"{fn_name}-ev" and trec["response"]["result"] == {"i": i}
        (log,) = [json.loads(line) for line in trec["logs"]]
        assert log["success"] and log["rule"] == f"guest/{fn_name}-ev--{fn_name}--ab"
        rec = _wait_activation(local_api, log["activationId"], deadline)
        swagger.validate(rec, "Activation")
        assert rec["cause"] == tid and rec["response"]["success"], rec
        assert rec["response"]["result"]["value"]["i"] == i
        versions[rec["response"]["result"]["version"]] += 1
    assert sum(versions.values()) == n
    assert abs(versions["v1"] - n / 2) < 4 * math.sqrt(n / 4), versions  # binomial bound, 4 sigma


def _wait_activation(server, aid, deadline):
    while True:
        r = requests.get(api(server, f"activations/{aid}"), auth=AUTH, timeout=10)
        if r.status_code == 200:
            return r.json()
        assert time.monotonic() < deadline, f"activation {aid} was never recorded"
        time.sleep(0.2)


def test_triggers_and_rules_survive_a_controller_restart(tmp_path, swagger):
    from mlfn.targets.local.api import close
    from tests.targets.openwhisk.conftest import NoDocker, _serve

    first = _serve(tmp_path, docker_client=NoDocker())
    try:
        lifecycle = make_lifecycle(first.url)
        lifecycle.publish(spec("keep", "a"))
        OpenWhiskTriggers(lifecycle.target.client).apply("keep", "default", TriggerSpec(name="keep-t"))
    finally:
        close(first, first.controller)
    second = _serve(tmp_path, docker_client=NoDocker())
    try:
        t = requests.get(api(second, "triggers/keep-t"), auth=AUTH, timeout=10).json()
        swagger.validate(t, "Trigger")
        assert list(t["rules"]) == ["guest/keep-t--keep--default"]
        assert OpenWhiskTriggers(make_lifecycle(second.url).target.client).list("keep")[0].name == "keep-t"
    finally:
        close(second, second.controller)
