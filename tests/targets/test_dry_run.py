"""The dry-run wrappers of the platform clients, the annotation field table and the wait
helper: no platform needed (the inner clients are small in-memory stand-ins that record what
reaches them; the real clients are tested against the test servers in openwhisk/ and
knative/)."""
from __future__ import annotations

import logging

import pytest

from mlfn.errors import TargetError
from mlfn.targets.annotations import FieldTable
from mlfn.targets.recording import Recorder, redact
from mlfn.targets.wait import poll


class MemoryOpenWhisk:
    """The OpenWhiskClient methods the dry run passes reads to, over a dict of entities."""

    base = "http://ow.example"
    namespace = "ns"

    def __init__(self, entities):
        self.entities = entities
        self.writes = []

    def get(self, *parts):
        return self.entities.get(parts)

    def put(self, parts, body, overwrite=True):
        self.writes.append(("PUT", parts))

    def delete(self, *parts, params=None):
        self.writes.append(("DELETE", parts))

    def resolved_namespace(self):
        return "ns"


def test_openwhisk_dry_run_records_writes_and_reads_its_own_plan():
    from mlfn.targets.openwhisk.client import DryRunOpenWhiskClient

    pkg = {"name": "fn", "annotations": [], "actions": [{"name": "v1", "annotations": [{"key": "k", "value": 1}]}]}
    inner = MemoryOpenWhisk({("packages", "fn"): pkg})
    rec = Recorder()
    dry = DryRunOpenWhiskClient(inner, rec)
    body = {"name": "v2", "annotations": [{"key": "require-whisk-auth", "value": "s3cret"}]}
    dry.put(("actions", "fn", "v2"), body, overwrite=False)
    dry.delete("actions", "fn", "v1")
    assert inner.writes == []  # nothing reached the platform
    assert [(r["method"], r["url"]) for r in rec.requests] == [
        ("PUT", "http://ow.example/api/v1/namespaces/ns/actions/fn/v2?overwrite=false"),
        ("DELETE", "http://ow.example/api/v1/namespaces/ns/actions/fn/v1")]
    assert rec.requests[0]["body"]["annotations"][0]["value"] == "***"  # redacted in the record
    assert dry.get("actions", "fn", "v2")["annotations"][0]["value"] == "s3cret"  # the plan itself is whole
    assert [a["name"] for a in dry.get("packages", "fn")["actions"]] == ["v2"]  # v1 deleted, v2 planned
    assert dry.get("actions", "fn", "v1") is None


def test_openwhisk_dry_run_offline_and_unreachable_plan_blind(caplog):
    from mlfn.targets.openwhisk.client import DryRunOpenWhiskClient, Unreadable

    offline = DryRunOpenWhiskClient(None, Recorder(), namespace="team")
    assert offline.base == "https://OPENWHISK_APIHOST" and offline.resolved_namespace() == "team"
    with pytest.raises(Unreadable):
        offline.get("packages", "fn")

    class Down(MemoryOpenWhisk):
        def get(self, *parts):
            raise TargetError("Cannot reach http://ow.example/x; check the API host")

    dry = DryRunOpenWhiskClient(Down({}), Recorder())
    with caplog.at_level(logging.WARNING, logger="mlfn.targets.openwhisk.client"):
        for _ in range(2):
            with pytest.raises(Unreadable):
                dry.get("packages", "fn")
    assert [r.getMessage() for r in caplog.records] == [
        "Cannot reach http://ow.example/x; the dry run plans as if nothing were deployed there."]  # once


def test_openwhisk_dry_run_never_invokes():
    from mlfn.targets.openwhisk.client import DryRunOpenWhiskClient

    with pytest.raises(TargetError, match="A dry run invokes nothing"):
        DryRunOpenWhiskClient(None, Recorder()).invoke(("actions", "fn", "default"), {}, timeout=1)


class MemoryKube:
    namespace = "ns"
    where = "the test cluster"

    def __init__(self, services=None, revisions=()):
        self.services = services or {}
        self.revisions = list(revisions)

    def url(self, kind, name=None):
        return f"https://k8s/apis/serving.knative.dev/v1/namespaces/ns/{kind}" + (f"/{name}" if name else "")

    def get_service(self, name):
        return self.services.get(name)

    def list_revisions(self, service):
        return [{"metadata": {"name": r}} for r in self.revisions]

    def __getattr__(self, name):  # any write reaching the cluster fails the test
        raise AssertionError(f"{name} reached the cluster in a dry run")


def test_kube_dry_run_applies_patches_to_its_own_plan():
    from mlfn.targets.knative.client import DryRunKubeClient

    svc = {"metadata": {"name": "fn", "generation": 3, "annotations": {"a": "1", "b": "2"}}, "spec": {"x": 1}}
    rec = Recorder()
    dry = DryRunKubeClient(MemoryKube({"fn": svc}, revisions=["fn-v1", "fn-v2"]), rec)
    out = dry.patch_service("fn", {"metadata": {"annotations": {"b": None, "c": "3"}}, "spec": {"y": 2}})
    assert out["metadata"]["annotations"] == {"a": "1", "c": "3"} and out["spec"] == {"x": 1, "y": 2}
    assert out["metadata"]["generation"] == 4
    assert dry.get_service("fn") == out and dry.wait("fn", 4) == out
    assert svc["metadata"]["annotations"] == {"a": "1", "b": "2"}  # the cluster's object is untouched
    dry.delete_revision("fn-v1")
    assert [r["metadata"]["name"] for r in dry.list_revisions("fn")] == ["fn-v2"]
    dry.delete_service("fn")
    assert dry.get_service("fn") is None and dry.list_revisions("fn") == []
    assert [r["method"] for r in rec.requests] == ["PATCH", "DELETE", "DELETE"]
    assert rec.requests[1]["url"].endswith("/revisions/fn-v1")


def test_kube_dry_run_create_is_planned_not_sent():
    from mlfn.targets.knative.client import DryRunKubeClient

    rec = Recorder()
    dry = DryRunKubeClient(MemoryKube(), rec)
    created = dry.create_service({"metadata": {"name": "fn"}, "spec": {}})
    assert created["metadata"]["generation"] == 1 and dry.get_service("fn")["metadata"]["name"] == "fn"
    assert rec.requests == [{"method": "POST", "url": "https://k8s/apis/serving.knative.dev/v1/namespaces/ns/services",
                             "body": {"metadata": {"name": "fn"}, "spec": {}}}]


def test_redact_hides_secret_values_anywhere():
    body = {"annotations": [{"key": "require-whisk-auth", "value": "s"}, {"key": "x", "value": "y"}],
            "nested": {"parameters": [{"key": "require-whisk-auth", "value": "t"}]}}
    out = redact(body, ["require-whisk-auth"])
    assert out["annotations"] == [{"key": "require-whisk-auth", "value": "***"}, {"key": "x", "value": "y"}]
    assert out["nested"]["parameters"][0]["value"] == "***" and body["annotations"][0]["value"] == "s"


def test_field_table_round_trips_and_stringifies_for_kubernetes():
    table = FieldTable("p/", (("number", "n"), ("image", "img")), strings=True)
    ann = table.encode({"number": 3, "image": "reg/x", "other": 1})
    assert ann == {"p/n": "3", "p/img": "reg/x"}
    assert table.decode({**ann, "unrelated": "z"}) == {"number": "3", "image": "reg/x"}
    assert table.key("image") == "p/img"
    assert FieldTable("m-", (("w", "weights"),)).encode({"w": {"v1": 100}}) == {"m-weights": {"v1": 100}}


def test_poll_reports_each_new_state_once_and_times_out_with_the_last():
    states = iter(["a", "a", "b", "b", "b"])
    notes, clock = [], [0.0]

    def step():
        return False, None, next(states)

    with pytest.raises(TargetError, match=r"Thing timed out after 3s; last state: b\."):
        poll(step, timeout=3, interval=1, what="Thing", note=notes.append,
             sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    assert notes == ["Thing: a", "Thing: b"]
    assert poll(lambda: (True, 42, ""), timeout=1, interval=1, what="x") == 42
