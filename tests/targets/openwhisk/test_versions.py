"""Versions and aliases end to end: Lifecycle (the alias policy) -> OpenWhisk target ->
fault-injecting proxy -> local controller. Tests of the REST API alone use the controller
without Docker (`rest_lifecycle`); those that invoke run real containers of the tiny action
image (`lifecycle`, marked docker)."""
from __future__ import annotations

import collections
import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlfn.errors import NotFoundError, TargetError
from tests.targets.openwhisk.conftest import make_lifecycle, spec


def assert_aliases_valid(lifecycle, fn):
    st = lifecycle.status(fn)
    names = {v.name for v in st.versions}
    for a in st.aliases:
        assert set(a.weights) <= names, f"alias {a.name} routes to a missing version: {a.weights}"
    return st


def test_publish_is_idempotent_and_first_version_gets_the_default_alias(rest_lifecycle, fn_name, rest_proxy, swagger):
    r1 = rest_lifecycle.publish(spec(fn_name, "a"))
    assert r1.created and r1.version.name == "v1"
    assert [(a.name, a.weights) for a in r1.aliases] == [("default", {"v1": 100})]
    again = rest_lifecycle.publish(spec(fn_name, "a"))
    assert not again.created and again.version.name == "v1"
    r2 = rest_lifecycle.publish(spec(fn_name, "b"))
    assert r2.created and r2.version.name == "v2"
    st = rest_lifecycle.status(fn_name)
    assert [v.name for v in st.versions] == ["v1", "v2"]
    assert st.versions[1].content_hash == "b" and st.versions[1].model_sha256 == "mb"
    assert [(a.name, a.weights) for a in st.aliases] == [("default", {"v1": 100})]  # traffic untouched
    # everything mlfn sent validates against the swagger definitions
    for req in rest_proxy.requests:
        if req["method"] == "PUT" and "/actions/" in req["path"]:
            swagger.validate(req["body"], "ActionPut")
        elif req["method"] == "PUT" and "/packages/" in req["path"]:
            swagger.validate(req["body"], "PackagePut")


@pytest.mark.docker
def test_invoke_says_which_version_served(lifecycle, fn_name):
    lifecycle.publish(spec(fn_name, "a"))
    lifecycle.publish(spec(fn_name, "b"))
    res = lifecycle.target.invoke(fn_name, {"n": 1})
    assert res.version == "v1" and res.result["version"] == "v1"
    assert lifecycle.target.invoke(fn_name, {"n": 1}, version="v2").result["version"] == "v2"


@pytest.mark.docker
def test_weighted_alias_split_promote_rollback(lifecycle, fn_name, local_api):
    lifecycle.publish(spec(fn_name, "a"))
    lifecycle.publish(spec(fn_name, "b"))
    alias = lifecycle.set_traffic(fn_name, "canary", {"v1": 80, "v2": 20}).alias
    assert alias.weights == {"v1": 80, "v2": 20}
    n = 300
    direct = make_lifecycle(local_api.url).target  # straight to the controller: the proxy only records
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda i: direct.invoke(fn_name, {"i": i}, alias="canary"), range(n)))
    for r in served:  # the activation record names the version that ran, and it is the one that answered
        assert r.version == r.result["version"]
    counts = collections.Counter(r.version for r in served)
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(counts["v2"] - 0.2 * n) < 4 * sd, counts  # binomial bound, 4 sigma
    # blue/green
    promoted = lifecycle.promote(fn_name, "v2", "canary")
    assert promoted.alias.weights == {"v2": 100} and promoted.alias.previous == {"v1": 80, "v2": 20}
    assert lifecycle.target.invoke(fn_name, {}, alias="canary").version == "v2"


def test_promote_and_rollback_read_history_from_the_platform(rest_lifecycle, fn_name, rest_api):
    rest_lifecycle.publish(spec(fn_name, "a"))
    rest_lifecycle.publish(spec(fn_name, "b"))
    rest_lifecycle.set_traffic(fn_name, "canary", {"v1": 80, "v2": 20})
    rest_lifecycle.promote(fn_name, "v2", "canary")
    back = rest_lifecycle.rollback(fn_name, "canary")
    assert back.alias.weights == {"v1": 80, "v2": 20} and back.replaced == {"v2": 100}
    rest_lifecycle.promote(fn_name, "v2", "canary")
    fresh = make_lifecycle(rest_api.url)  # a fresh machine reads the history from the platform
    assert fresh.rollback(fn_name, "canary").alias.weights == {"v1": 80, "v2": 20}
    with pytest.raises(TargetError, match="no earlier assignment"):  # the alias started at 80/20
        fresh.rollback(fn_name, "canary")


@pytest.mark.docker
def test_conductor_activation_shows_the_version(lifecycle, fn_name, local_api):
    import requests

    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH

    lifecycle.publish(spec(fn_name, "a"))
    lifecycle.publish(spec(fn_name, "b"))
    lifecycle.set_traffic(fn_name, "ab", {"v1": 50, "v2": 50})
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
        lifecycle.target.invoke(fn_name, {"fail": "bad input"}, alias="ab")


def test_delete_refuses_routed_versions(rest_lifecycle, fn_name):
    rest_lifecycle.publish(spec(fn_name, "a"))
    rest_lifecycle.publish(spec(fn_name, "b"))
    with pytest.raises(TargetError, match="routed by alias"):
        rest_lifecycle.delete(fn_name, "v1")
    assert rest_lifecycle.delete(fn_name, "v2").deleted == [f"{fn_name}/v2"]
    assert rest_lifecycle.delete(fn_name, "v1", force=True).deleted == [f"{fn_name}/default", f"{fn_name}/v1"]
    assert_aliases_valid(rest_lifecycle, fn_name)
    with pytest.raises(NotFoundError):
        rest_lifecycle.set_traffic(fn_name, "default", {"v1": 100})
    rest_lifecycle.delete(fn_name)
    with pytest.raises(NotFoundError):
        rest_lifecycle.status(fn_name)


def test_dry_run_sends_no_writes(rest_proxy, fn_name, rest_lifecycle):
    rest_lifecycle.publish(spec(fn_name, "a"))
    rest_proxy.clear()
    dry = make_lifecycle(rest_proxy.url, dry_run=True)
    out = dry.publish(spec(fn_name, "b"))
    dry.set_traffic(fn_name, "default", {"v1": 50, "v2": 50})  # v2 exists in the dry run's own plan
    dry.delete(fn_name)
    assert out.version.name == "v2"
    assert {r["method"] for r in rest_proxy.requests} == {"GET"}
    planned = [r["method"] for r in dry.recorder.requests]
    assert planned[0] == "PUT" and "DELETE" in planned
    assert [v.name for v in rest_lifecycle.versions(fn_name)] == ["v1"]


@pytest.mark.parametrize("fault", [(500, False), (429, False), (500, True), ("timeout", False), (503, True)])
def test_faults_during_deploy_are_retried_or_leave_aliases_valid(rest_proxy, fn_name, fault):
    lifecycle = make_lifecycle(rest_proxy.url, timeout=1.0)
    status, after = fault
    lifecycle.publish(spec(fn_name, "a"))
    lifecycle.set_traffic(fn_name, "stable", {"v1": 100})
    rest_proxy.fail("PUT", rf"/actions/{fn_name}/v2", status, times=1, after=after)
    rest_proxy.fail("PUT", rf"/actions/{fn_name}/stable", status, times=2, after=after)
    r = lifecycle.publish(spec(fn_name, "b"))
    assert r.version.name == "v2"
    lifecycle.set_traffic(fn_name, "stable", {"v1": 90, "v2": 10})
    st = assert_aliases_valid(lifecycle, fn_name)
    assert [v.name for v in st.versions] == ["v1", "v2"]  # a retried create made no duplicate
    assert {a.name: a.weights for a in st.aliases}["stable"] == {"v1": 90, "v2": 10}


def test_persistent_failure_stops_before_moving_aliases(rest_proxy, fn_name, rest_lifecycle):
    rest_lifecycle.publish(spec(fn_name, "a"))
    rest_proxy.fail("PUT", rf"/actions/{fn_name}/v2", 500, times=99)
    with pytest.raises(TargetError, match="HTTP 500"):
        rest_lifecycle.publish(spec(fn_name, "b"))
    st = assert_aliases_valid(rest_lifecycle, fn_name)
    assert [v.name for v in st.versions] == ["v1"]


def test_version_numbers_are_never_reused(rest_lifecycle, fn_name):
    rest_lifecycle.publish(spec(fn_name, "a"))
    rest_lifecycle.publish(spec(fn_name, "b"))
    rest_lifecycle.delete(fn_name, "v2")
    r = rest_lifecycle.publish(spec(fn_name, "c"))
    assert r.version.name == "v3"  # v2 meant other content; history may still name it
    assert [v.name for v in rest_lifecycle.versions(fn_name)] == ["v1", "v3"]


def test_rollback_is_never_stuck_on_a_deleted_version(rest_lifecycle, fn_name):
    """Issue 12 item 2: traffic v1=50 v3=50, promote v1, delete v3 (unrouted), rollback."""
    for content in "abc":
        rest_lifecycle.publish(spec(fn_name, content))
    rest_lifecycle.set_traffic(fn_name, "default", {"v1": 50, "v3": 50})
    rest_lifecycle.promote(fn_name, "v1")
    rest_lifecycle.set_traffic(fn_name, "default", {"v1": 90, "v2": 10})
    deleted = rest_lifecycle.delete(fn_name, "v3")
    assert deleted.deleted == [f"{fn_name}/v3"]
    assert deleted.notes == ["Alias 'default': dropped 1 rollback history entry naming v3."]
    back = rest_lifecycle.rollback(fn_name)  # v1=90 v2=10 -> v1=100 (v1=50 v3=50 was pruned)
    assert back.alias.weights == {"v1": 100} and back.replaced == {"v1": 90, "v2": 10}
    with pytest.raises(TargetError, match="no earlier assignment"):  # clear, not "v3 does not exist"
        rest_lifecycle.rollback(fn_name)


def test_deleting_a_version_drops_its_zero_entry_from_a_split(rest_lifecycle, fn_name):
    """Issue 12 item 10: the alias stays (and keeps serving); only the 0% entry goes."""
    rest_lifecycle.publish(spec(fn_name, "a"))
    rest_lifecycle.publish(spec(fn_name, "b"))
    rest_lifecycle.set_traffic(fn_name, "ab", {"v1": 100, "v2": 0})
    out = rest_lifecycle.delete(fn_name, "v2", force=True)
    assert out.deleted == [f"{fn_name}/v2"]
    assert "Alias 'ab': removed the 0% entry for v2 (v1=100)." in out.notes
    aliases = {a.name: a.weights for a in assert_aliases_valid(rest_lifecycle, fn_name).aliases}
    assert aliases == {"default": {"v1": 100}, "ab": {"v1": 100}}
