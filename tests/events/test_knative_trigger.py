"""Knative Eventing Triggers: manifests validate against the vendored Trigger CRD
(tests/specs/knative-eventing/trigger.yaml, packaged as templates/knative/trigger-crd.yaml),
and are applied, listed and deleted through the Kubernetes test API server."""
from __future__ import annotations

import copy

import pytest
import yaml

from mlfn.errors import ConfigError, TargetError
from mlfn.targets.events import parse_trigger
from mlfn.targets.knative.trigger import render_trigger
from mlfn.targets.knative.validate import ManifestError, template_dir, trigger_schema, validate_trigger
from tests.targets.knative.conftest import NS, version_spec

FULL = "broker=default,type=com.example.image.uploaded,source=/bucket,retry=5,backoffPolicy=exponential," \
       "backoffDelay=PT0.5S,deadLetterSink=http://dlq.mlfn-test.svc.cluster.local"


def test_packaged_crd_is_the_vendored_one(specs_dir):
    assert (template_dir() / "trigger-crd.yaml").read_text() == (specs_dir / "knative-eventing" / "trigger.yaml").read_text()


def test_rendered_triggers_validate_against_the_crd(specs_dir):
    import jsonschema

    crd = yaml.safe_load((specs_dir / "knative-eventing" / "trigger.yaml").read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    upstream = jsonschema.Draft7Validator(v1["schema"]["openAPIV3Schema"])  # as written upstream, not made strict
    for text, alias in ((FULL, "default"), ("broker=b1,type=t", "canary"), ("broker=b1,name=my-trigger", "default")):
        manifest = render_trigger("digits", alias, parse_trigger(text), NS)
        upstream.validate(manifest)
        validate_trigger(manifest)
    full = render_trigger("digits", "default", parse_trigger(FULL), NS)
    assert full["spec"] == {
        "broker": "default",
        "filter": {"attributes": {"type": "com.example.image.uploaded", "source": "/bucket"}},
        "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "digits",
                               "namespace": NS}},
        "delivery": {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S",
                     "deadLetterSink": {"uri": "http://dlq.mlfn-test.svc.cluster.local"}},
    }
    tagged = render_trigger("digits", "canary", parse_trigger("broker=b1,type=t"), NS)
    assert tagged["spec"]["subscriber"] == {"uri": f"http://canary-digits.{NS}.svc.cluster.local"}


@pytest.mark.parametrize("change,needle", [
    (lambda m: m["spec"].update(broker=3), "spec.broker"),
    (lambda m: m["spec"]["delivery"].update(retry="five"), "spec.delivery.retry"),
    (lambda m: m["spec"]["subscriber"].update(url="http://x"), "spec.subscriber.url"),
    (lambda m: m["spec"].pop("subscriber"), "spec.subscriber"),
    (lambda m: m["spec"]["filter"]["attributes"].update(type=1), "spec.filter.attributes.type"),
    (lambda m: m["metadata"].update(name="Not_Valid"), "metadata.name"),
])
def test_invalid_triggers_are_refused_naming_the_field(change, needle):
    manifest = copy.deepcopy(render_trigger("digits", "default", parse_trigger(FULL), NS))
    change(manifest)
    with pytest.raises(ManifestError, match=needle.replace(".", r"\.")):
        validate_trigger(manifest)


def test_strict_schema_rejects_unknown_fields_where_upstream_does_not_preserve_them():
    schema = trigger_schema()
    assert schema["properties"]["spec"].get("x-kubernetes-preserve-unknown-fields")  # spec itself is open
    assert schema["properties"]["spec"]["properties"]["subscriber"]["additionalProperties"] is False


@pytest.mark.parametrize("text,needle", [
    ("broker=default,retry=x", "retry"), ("type=t", "broker"), ("broker=b,backoffPolicy=random", "backoffPolicy"),
    ("broker=b,backoffDelay=5s", "backoffDelay"), ("bad name!", "trigger name"), ("broker=b,broker=c", "twice"),
    ("broker=", "KEY=VALUE"),
])
def test_bad_trigger_options_are_one_sentence(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_trigger(text)


def test_apply_list_and_delete_through_the_api_server(api, make_lifecycle):
    lifecycle = make_lifecycle()
    lifecycle.publish(version_spec(1))
    wiring = lifecycle.target.event_wiring()
    spec = parse_trigger(FULL)
    rec = wiring.apply("digits", "default", spec)
    name = rec.name
    stored = api.kube.objects[("triggers", NS, name)]
    assert stored["spec"]["broker"] == "default" and stored["metadata"]["labels"]["mlfn.dev/function"] == "digits"
    validate_trigger({k: v for k, v in stored.items() if k != "status"} | {"metadata": {
        k: v for k, v in stored["metadata"].items() if k in ("name", "namespace", "labels")}})
    again = wiring.apply("digits", "default", spec)  # same trigger again: replaced in place
    assert again.name == name and len([k for k in api.kube.objects if k[0] == "triggers"]) == 1
    wiring.apply("digits", "default", parse_trigger("broker=other,type=t2"))
    listed = wiring.list("digits")
    assert sorted(r.detail["broker"] for r in listed) == ["default", "other"]
    assert all(r.kind == "knative" and r.alias == "default" for r in listed)
    assert wiring.list("other-function") == []
    import time

    deadline = time.monotonic() + 5
    while "subscriberUri" not in (api.kube.objects[("triggers", NS, name)].get("status") or {}):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.kube.objects[("triggers", NS, name)]["status"]["subscriberUri"].startswith("http://digits.")
    assert sorted(wiring.delete("digits")) == sorted(r.name for r in listed)
    assert [k for k in api.kube.objects if k[0] == "triggers"] == []
    assert wiring.delete("digits") == []


def test_dry_run_records_the_trigger_and_sends_nothing(api, make_lifecycle):
    dry = make_lifecycle(dry_run=True)
    wiring = dry.target.event_wiring()
    wiring.apply("digits", "default", parse_trigger("broker=default,type=t"))
    assert [r["method"] for r in dry.recorder.requests] == ["POST"]
    assert dry.recorder.requests[0]["url"].endswith(f"/apis/eventing.knative.dev/v1/namespaces/{NS}/triggers")
    assert [k for k in api.kube.objects if k[0] == "triggers"] == []


def test_openwhisk_name_on_knative_is_refused(make_lifecycle):
    with pytest.raises(TargetError, match="broker"):
        make_lifecycle().target.event_wiring().apply("digits", "default", parse_trigger("uploads"))


def test_render_writes_the_trigger_beside_the_service(tmp_path, make_lifecycle):
    target = make_lifecycle().target
    paths = target.event_wiring().render("digits", "default", parse_trigger(FULL), str(tmp_path))
    doc = yaml.safe_load(open(paths[0]).read())
    assert doc["kind"] == "Trigger" and validate_trigger(doc)
