"""Versions and aliases end to end: OpenWhiskTarget -> fault-injecting proxy -> local
controller -> real containers of the tiny action image."""
from __future__ import annotations

import collections
import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlfn.errors import NotFoundError, TargetError
from tests.targets.openwhisk.conftest import make_target, spec

pytestmark = pytest.mark.docker


def assert_aliases_valid(target, fn):
    st = target.status(fn)
    names = {v.name for v in st.versions}
    for a in st.aliases:
        assert set(a.weights) <= names, f"alias {a.name} routes to a missing version: {a.weights}"
    return st


def test_publish_is_idempotent_and_first_version_gets_the_default_alias(target, fn_name, proxy, swagger):
    r1 = target.publish(spec(fn_name, "a"))
    assert r1.created and r1.version.name == "v1"
    assert [(a.name, a.weights) for a in r1.aliases] == [("default", {"v1": 100})]
    again = target.publish(spec(fn_name, "a"))
    assert not again.created and again.version.name == "v1"
    r2 = target.publish(spec(fn_name, "b"))
    assert r2.created and r2.version.name == "v2"
    st = target.status(fn_name)
    assert [v.name for v in st.versions] == ["v1", "v2"]
    assert st.versions[1].content_hash == "b" and st.versions[1].model_sha256 == "mb"
    assert [(a.name, a.weights) for a in st.aliases] == [("default", {"v1": 100})]  # traffic untouched
    res = target.invoke(fn_name, {"n": 1})
    assert res.version == "v1" and res.result["version"] == "v1"
    assert target.invoke(fn_name, {"n": 1}, version="v2").result["version"] == "v2"
    # everything mlfn sent validates against the swagger definitions
    for req in proxy.requests:
        if req["method"] == "PUT" and "/actions/" in req["path"]:
            swagger.validate(req["body"], "ActionPut")
        elif req["method"] == "PUT" and "/packages/" in req["path"]:
            swagger.validate(req["body"], "PackagePut")


def test_weighted_alias_split_promote_rollback(target, fn_name, local_api):
    target.publish(spec(fn_name, "a"))
    target.publish(spec(fn_name, "b"))
    alias = target.set_traffic(fn_name, "canary", {"v1": 80, "v2": 20})
    assert alias.weights == {"v1": 80, "v2": 20}
    n = 300
    direct = make_target(local_api.url)  # straight to the controller: the proxy only records
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda i: direct.invoke(fn_name, {"i": i}, alias="canary"), range(n)))
    for r in served:  # the activation record names the version that ran, and it is the one that answered
        assert r.version == r.result["version"]
    counts = collections.Counter(r.version for r in served)
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(counts["v2"] - 0.2 * n) < 4 * sd, counts  # binomial bound, 4 sigma
    # blue/green then back
    promoted = target.promote(fn_name, "v2", "canary")
    assert promoted.weights == {"v2": 100} and promoted.previous == {"v1": 80, "v2": 20}
    assert target.invoke(fn_name, {}, alias="canary").version == "v2"
    back = target.rollback(fn_name, "canary")
    assert back.weights == {"v1": 80, "v2": 20}
    target.promote(fn_name, "v2", "canary")
    fresh = make_target(local_api.url)  # a fresh machine reads the history from the platform
    assert fresh.rollback(fn_name, "canary").weights == {"v1": 80, "v2": 20}
    with pytest.raises(TargetError, match="no earlier assignment"):  # the alias started at 80/20
        fresh.rollback(fn_name, "canary")


def test_conductor_activation_shows_the_version(target, fn_name, local_api):
    import requests

    from mlfn.targets.wskprops import GUEST_AUTH

    target.publish(spec(fn_name, "a"))
    target.publish(spec(fn_name, "b"))
    target.set_traffic(fn_name, "ab", {"v1": 50, "v2": 50})
    r = requests.post(f"{local_api.url}/api/v1/namespaces/_/actions/{fn_name}/ab?blocking=true", json={"q": 1},
                      auth=tuple(GUEST_AUTH.split(":", 1)))
    act = r.json()
    ann = {a["key"]: a["value"] for a in act["annotations"]}
    assert ann["conductor"] is True and ann["kind"] == "sequence" and len(act["logs"]) == 3
    comp = requests.get(f"{local_api.url}/api/v1/namespaces/_/activations/{act['logs'][1]}",
                        auth=tuple(GUEST_AUTH.split(":", 1))).json()
    assert comp["cause"] == act["activationId"] and comp["name"] in ("v1", "v2")
    assert act["response"]["result"] == {"version": comp["name"], "value": {"q": 1}}
    # an application error in the version comes back as the alias's error
    with pytest.raises(TargetError, match="bad input"):
        target.invoke(fn_name, {"fail": "bad input"}, alias="ab")


def test_delete_refuses_routed_versions(target, fn_name):
    target.publish(spec(fn_name, "a"))
    target.publish(spec(fn_name, "b"))
    with pytest.raises(TargetError, match="routed by alias"):
        target.delete(fn_name, "v1")
    assert target.delete(fn_name, "v2") == [f"{fn_name}/v2"]
    assert target.delete(fn_name, "v1", force=True) == [f"{fn_name}/default", f"{fn_name}/v1"]
    assert_aliases_valid(target, fn_name)
    with pytest.raises(NotFoundError):
        target.set_traffic(fn_name, "default", {"v1": 100})
    target.delete(fn_name)
    with pytest.raises(NotFoundError):
        target.status(fn_name)


def test_dry_run_sends_no_writes(proxy, fn_name, target):
    target.publish(spec(fn_name, "a"))
    proxy.clear()
    dry = make_target(proxy.url, dry_run=True)
    out = dry.publish(spec(fn_name, "b"))
    dry.set_traffic(fn_name, "default", {"v1": 50, "v2": 50})
    dry.delete(fn_name)
    assert out.version.name == "v2"
    assert {r["method"] for r in proxy.requests} == {"GET"}
    planned = [r["method"] for r in dry.recorder.requests]
    assert planned[0] == "PUT" and "DELETE" in planned
    assert [v.name for v in target.versions(fn_name)] == ["v1"]


@pytest.mark.parametrize("fault", [(500, False), (429, False), (500, True), ("timeout", False), (503, True)])
def test_faults_during_deploy_are_retried_or_leave_aliases_valid(proxy, fn_name, target, fault):
    status, after = fault
    target.publish(spec(fn_name, "a"))
    target.set_traffic(fn_name, "stable", {"v1": 100})
    proxy.fail("PUT", rf"/actions/{fn_name}/v2", status, times=1, after=after)
    proxy.fail("PUT", rf"/actions/{fn_name}/stable", status, times=2, after=after)
    target.http.timeout = 1.0
    r = target.publish(spec(fn_name, "b"))
    assert r.version.name == "v2"
    target.set_traffic(fn_name, "stable", {"v1": 90, "v2": 10})
    st = assert_aliases_valid(target, fn_name)
    assert [v.name for v in st.versions] == ["v1", "v2"]  # a retried create made no duplicate
    assert {a.name: a.weights for a in st.aliases}["stable"] == {"v1": 90, "v2": 10}


def test_persistent_failure_stops_before_moving_aliases(proxy, fn_name, target):
    target.publish(spec(fn_name, "a"))
    proxy.fail("PUT", rf"/actions/{fn_name}/v2", 500, times=99)
    with pytest.raises(TargetError, match="HTTP 500"):
        target.publish(spec(fn_name, "b"))
    st = assert_aliases_valid(target, fn_name)
    assert [v.name for v in st.versions] == ["v1"]


def test_version_numbers_are_never_reused(target, fn_name):
    target.publish(spec(fn_name, "a"))
    target.publish(spec(fn_name, "b"))
    target.delete(fn_name, "v2")
    r = target.publish(spec(fn_name, "c"))
    assert r.version.name == "v3"  # v2 meant other content; history may still name it
    assert [v.name for v in target.versions(fn_name)] == ["v1", "v3"]
