"""The Service mlfn renders: validated against the real CRD schema and the webhook rules."""
import copy
import json

import jsonschema
import pytest
import yaml

from mlfn.config import Config
from mlfn.errors import ConfigError, TargetError
from mlfn.targets.knative import codec, manifest as km
from mlfn.targets.knative.validate import ManifestError, template_dir, validate_service

from .conftest import version_spec


@pytest.fixture(scope="module")
def real_schema(specs_dir):
    """The Service CRD's schema as the API server has it (the vendored upstream spec)."""
    crd = yaml.safe_load((specs_dir / "knative" / "service.yaml").read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def render(cfg=None, n=1, traffic=None, **spec_kw):
    """Like the deploy layer: VersionSpec carries deploy.memory/timeout/concurrency/env."""
    cfg = cfg or Config(name="digits")
    d = cfg.deploy
    spec_kw = {"memory": d.memory, "timeout": d.timeout, "concurrency": d.concurrency, **spec_kw}
    spec = version_spec(n, **spec_kw)
    traffic = traffic if traffic is not None else [{"revisionName": f"digits-v{n}", "percent": 100}]
    return km.render_service(cfg, spec, n, namespace="mlfn-test", traffic=traffic)


CONFIGS = {
    "defaults": {},
    "autoscaling": {"deploy": {"concurrency": 4, "memory": 512, "timeout": 30500,
                               "knative": {"min_scale": 1, "max_scale": 5, "target": 8, "metric": "rps",
                                           "cpu": "250m", "cpu_limit": "1", "memory_limit": "768Mi",
                                           "timeout_seconds": 120}}},
    "hpa": {"deploy": {"knative": {"autoscaling_class": "hpa.autoscaling.knative.dev", "metric": "cpu",
                                   "min_scale": 1, "target": 70}}},
    "env": {"deploy": {"env": {"MODEL_THREADS": 2, "GREETING": "hello: world"}}},
    "grpc": {"serving": {"grpc": True}},
}


def config(overrides):
    from mlfn.config import from_dict

    return from_dict({"name": "digits", **overrides})


def test_packaged_crd_is_the_upstream_spec(specs_dir):
    assert (template_dir() / "service-crd.yaml").read_text() == (specs_dir / "knative" / "service.yaml").read_text()


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_every_rendered_manifest_is_valid(case, real_schema):
    manifest = render(config(CONFIGS[case]))
    jsonschema.Draft7Validator(real_schema).validate(manifest)  # the CRD as the API server has it
    validate_service(manifest)  # mlfn's strict reading + the webhook rules


def test_manifest_layout():
    m = render(config(CONFIGS["autoscaling"]), n=3,
               traffic=[{"revisionName": "digits-v2", "percent": 100}, {"revisionName": "digits-v3", "tag": "v3", "percent": 0}])
    tpl = m["spec"]["template"]
    assert m["metadata"]["name"] == "digits" and m["metadata"]["namespace"] == "mlfn-test"
    assert tpl["metadata"]["name"] == "digits-v3"
    assert tpl["metadata"]["labels"][km.LABEL_VERSION] == "3"
    ann = tpl["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/min-scale"] == "1"
    assert ann["autoscaling.knative.dev/max-scale"] == "5"
    assert ann["autoscaling.knative.dev/target"] == "8"
    assert ann["autoscaling.knative.dev/metric"] == "rps"
    assert ann[codec.VERSION_FIELDS.key("content_hash")] == version_spec(3).content_hash
    assert ann[codec.VERSION_FIELDS.key("model_sha256")] == version_spec(3).model_sha256
    assert ann[codec.VERSION_FIELDS.key("quantization")] == "int8" and ann[codec.VERSION_FIELDS.key("pipeline_hash")] == version_spec(3).pipeline_hash
    assert ann["mlfn.dev/mlfn-version"] == "0.1.0"
    pod = tpl["spec"]
    assert pod["containerConcurrency"] == 4 and pod["timeoutSeconds"] == 120
    (c,) = pod["containers"]
    assert c["image"] == version_spec(3).image and "@sha256:" in c["image"]
    assert c["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["resources"] == {"requests": {"memory": "512Mi", "cpu": "250m"}, "limits": {"memory": "768Mi", "cpu": "1"}}
    assert m["spec"]["traffic"][0] == {"revisionName": "digits-v2", "percent": 100}
    assert int(m["metadata"]["annotations"][codec.ANN_LAST]) == 3


def test_grpc_names_the_port_h2c_and_only_then():
    (c,) = render(config(CONFIGS["grpc"]))["spec"]["template"]["spec"]["containers"]
    assert c["ports"] == [{"name": "h2c", "containerPort": 8080}]
    (c,) = render(config({}))["spec"]["template"]["spec"]["containers"]
    assert c["ports"] == [{"name": "http1", "containerPort": 8080}]


def test_defaults_scale_to_zero_and_timeout_from_deploy_timeout():
    m = render(config({"deploy": {"timeout": 30500}}))
    ann = m["spec"]["template"]["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/min-scale"] == "0"
    assert "autoscaling.knative.dev/max-scale" not in ann
    assert m["spec"]["template"]["spec"]["timeoutSeconds"] == 31
    env = m["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MLFN_LOG_LEVEL", "value": "info"}]


def test_env_values_are_strings_even_when_yaml_would_retype_them():
    m = render(config(CONFIGS["env"]), env={"MODEL_THREADS": 2, "GREETING": "hello: world", "FLAG": "true"})
    env = {e["name"]: e["value"] for e in m["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"MODEL_THREADS": "2", "GREETING": "hello: world", "FLAG": "true"}


@pytest.mark.parametrize("name", ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"])
def test_reserved_env_is_refused_with_the_key(name):
    with pytest.raises(ConfigError, match=rf"deploy\.env\.{name} is reserved by Knative"):
        render(env={name: "1"})


def _break(mutate):
    m = render(traffic=[{"revisionName": "digits-v1", "percent": 100}, {"revisionName": "digits-v1", "tag": "v1", "percent": 0}])
    mutate(m)
    return m


BROKEN = [
    ("unknown field", lambda m: m["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
     r"spec\.template\.spec\.containers\[0\]\.imagePullPolicyy: unknown field"),
    ("percent as string", lambda m: m["spec"]["traffic"][0].update(percent="100"),
     r"spec\.traffic\[0\]\.percent"),
    ("percents sum", lambda m: m["spec"]["traffic"][0].update(percent=90),
     r"spec\.traffic: traffic percents sum to 90, not 100"),
    ("percent range", lambda m: m["spec"]["traffic"][0].update(percent=101),
     r"spec\.traffic\[0\]\.percent: 101 must be"),
    ("duplicate tag", lambda m: m["spec"]["traffic"].append({"revisionName": "digits-v1", "tag": "v1", "percent": 0}),
     r"spec\.traffic\[2\]\.tag: tag 'v1' is used twice"),
    ("bad tag", lambda m: m["spec"]["traffic"][1].update(tag="Canary_1"), r"spec\.traffic\[1\]\.tag"),
    ("url in spec", lambda m: m["spec"]["traffic"][1].update(url="http://x"), r"spec\.traffic\[1\]\.url"),
    ("revision and latest", lambda m: m["spec"]["traffic"][0].update(latestRevision=True),
     r"spec\.traffic\[0\]\.latestRevision"),
    ("no target", lambda m: m["spec"]["traffic"][0].pop("revisionName"), r"spec\.traffic\[0\]\.revisionName"),
    ("two ports", lambda m: m["spec"]["template"]["spec"]["containers"][0]["ports"].append({"containerPort": 9000}),
     r"spec\.template\.spec\.containers\[0\]\.ports: Knative allows one container port"),
    ("reserved env", lambda m: m["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "K_REVISION", "value": "x"}),
     r"spec\.template\.spec\.containers\[0\]\.env\[1\]\.name: K_REVISION is reserved"),
    ("duplicate env", lambda m: m["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "MLFN_LOG_LEVEL", "value": "x"}),
     r"spec\.template\.spec\.containers\[0\]\.env\[1\]: duplicate entry MLFN_LOG_LEVEL"),
    ("byo prefix", lambda m: m["spec"]["template"]["metadata"].update(name="other-v1"),
     r"spec\.template\.metadata\.name: revision name 'other-v1' must start with 'digits-'"),
    ("scale bounds", lambda m: m["spec"]["template"]["metadata"]["annotations"].update(
        {"autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2"}),
     r"autoscaling\.knative\.dev/max-scale: max-scale 2 must be >= min-scale 3"),
    ("kpa metric", lambda m: m["spec"]["template"]["metadata"]["annotations"].update({"autoscaling.knative.dev/metric": "cpu"}),
     r"autoscaling\.knative\.dev/metric: 'cpu' is not a kpa"),
    ("min-scale not int", lambda m: m["spec"]["template"]["metadata"]["annotations"].update({"autoscaling.knative.dev/min-scale": "one"}),
     r"autoscaling\.knative\.dev/min-scale: 'one' must be an integer"),
    ("concurrency", lambda m: m["spec"]["template"]["spec"].update(containerConcurrency=5000),
     r"spec\.template\.spec\.containerConcurrency: 5000"),
    ("timeout", lambda m: m["spec"]["template"]["spec"].update(timeoutSeconds=3600),
     r"spec\.template\.spec\.timeoutSeconds: 3600"),
    ("service name", lambda m: m["metadata"].update(name="Digits"), r"metadata\.name: 'Digits' must be a DNS-1035"),
    ("annotation not a string", lambda m: m["spec"]["template"]["metadata"]["annotations"].update({"a": 1}),
     r"spec\.template\.metadata\.annotations\.a"),
]


@pytest.mark.parametrize("case,mutate,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_manifests_are_rejected_naming_the_field(case, mutate, message):
    m = _break(mutate)
    with pytest.raises(ManifestError, match=message):
        validate_service(m)


def test_template_change_without_new_name_is_rejected():
    old = render()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/other@sha256:" + "f" * 64
    with pytest.raises(ManifestError, match=r"spec\.template\.metadata\.name: the template changed but the revision name"):
        validate_service(new, existing=old)
    same = copy.deepcopy(old)
    same["spec"]["traffic"] = [{"revisionName": "digits-v1", "percent": 100}, {"revisionName": "digits-v1", "tag": "x", "percent": 0}]
    validate_service(same, existing=old)  # a traffic-only change keeps the name


def test_routing_round_trip_and_mapping():
    traffic = [
        {"revisionName": "digits-v2", "percent": 90},
        {"revisionName": "digits-v3", "percent": 10},
        {"revisionName": "digits-v2", "tag": "stable", "percent": 0},
        {"revisionName": "digits-v3", "tag": "v3", "percent": 0},
    ]
    r = codec.Routing.from_traffic("digits", traffic)
    assert r.weights("digits", None) == {"v2": 90, "v3": 10}
    assert r.weights("digits", "digits") == {"v2": 90, "v3": 10}  # the bare function name is the default alias
    assert r.weights("digits", "stable") == {"v2": 100}
    assert r.weights("digits", "canary") is None
    assert r.routed("digits-v2") == ["default", "stable"] and r.routed("digits-v1") == []
    assert r.to_traffic() == traffic
    r.assign("digits", "canary", {"v3": 100, "v2": 0})
    assert {"revisionName": "digits-v3", "tag": "canary", "percent": 0} in r.to_traffic()
    with pytest.raises(TargetError, match="alias 'canary' can point to one version only"):
        r.assign("digits", "canary", {"v2": 50, "v3": 50})


def test_routing_reads_tagged_entries_with_percent_written_by_kn():
    r = codec.Routing.from_traffic("digits", [{"revisionName": "digits-v1", "tag": "blue", "percent": 100}])
    assert r.weights("digits", None) == {"v1": 100}
    assert r.weights("digits", "blue") == {"v1": 100}


@pytest.mark.parametrize("alias", ["v2", "Canary", "a_b"])
def test_bad_alias_names(alias):
    with pytest.raises(TargetError, match=f"Alias name '{alias}'"):
        codec.check_alias_name(alias)


def test_a_split_replaces_latest_revision_entries_written_by_others():
    r = codec.Routing.from_traffic("digits", [{"latestRevision": True, "percent": 100},
                                           {"latestRevision": True, "tag": "latest", "percent": 0}])
    r.assign("digits", None, {"v1": 100})
    assert r.to_traffic() == [{"revisionName": "digits-v1", "percent": 100},
                              {"latestRevision": True, "tag": "latest", "percent": 0}]


@pytest.mark.parametrize("overrides,message", [
    ({"deploy": {"timeout": 900000}}, r"deploy\.timeout \(ms\) gives a request timeout of 900 s"),
    ({"deploy": {"knative": {"timeout_seconds": 0}}}, r"deploy\.knative\.timeout_seconds gives .* 0 s"),
    ({"deploy": {"concurrency": 5000}}, r"deploy\.concurrency is 5000"),
    ({"deploy": {"knative": {"min_scale": 3, "max_scale": 2}}}, r"deploy\.knative\.max_scale \(2\) must be"),
])
def test_limits_are_reported_by_their_mlfn_yaml_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        render(config(overrides))


def test_rollback_histories_are_read_per_alias_including_the_older_change_log():
    def svc(value):
        return {"metadata": {"name": "digits", "annotations": {codec.ANN_HISTORY: json.dumps(value)}}}

    assert codec.read_histories(svc({"default": [{"v1": 100}], "stable": []})) == {"default": [{"v1": 100}],
                                                                                   "stable": []}
    legacy = [{"alias": "default", "from": None, "to": {"v1": 100}},
              {"alias": "default", "from": {"v1": 100}, "to": {"v2": 100}},
              {"alias": "canary", "from": None, "to": {"v2": 100}}]
    assert codec.read_histories(svc(legacy)) == {"default": [{"v1": 100}]}
    obj = svc({})
    codec.write_histories(obj, {"default": [{"v1": 100}], "gone": []})
    assert json.loads(obj["metadata"]["annotations"][codec.ANN_HISTORY]) == {"default": [{"v1": 100}]}
    with pytest.raises(TargetError, match="is not valid JSON"):
        codec.read_histories({"metadata": {"name": "digits", "annotations": {codec.ANN_HISTORY: "{"}}})
