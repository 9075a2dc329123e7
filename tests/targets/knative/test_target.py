"""The Knative target (through mlfn.lifecycle.Lifecycle, the alias policy) against the fake
Kubernetes API server (a real HTTP server and controller).

Each `make_lifecycle()` is a fresh object with no memory of its own, like a new CI runner."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from mlfn.errors import NotFoundError, TargetError
from mlfn.targets.knative import codec
from mlfn.targets.knative.validate import validate_service

from .conftest import NS, version_spec


def traffic(api):
    return api.kube.service("digits")["spec"]["traffic"]


def default_weights(api):
    return codec.Routing.from_traffic("digits", traffic(api)).weights("digits", None)


def test_first_deploy_creates_the_service_with_v1(api, make_lifecycle):
    messages = []
    result = make_lifecycle().publish(version_spec(1), progress=messages.append)
    assert result.created and result.version.name == "v1" and result.version.number == 1
    assert result.version.url == f"http://v1-digits.{NS}.example.com"
    assert result.version.content_hash == version_spec(1).content_hash
    assert result.aliases[0].name == "default" and result.aliases[0].weights == {"v1": 100}
    assert result.aliases[0].url == f"http://digits.{NS}.example.com"
    svc = api.kube.service("digits")  # in the kubeconfig context's namespace
    assert svc["spec"]["template"]["metadata"]["name"] == "digits-v1"
    assert svc["spec"]["template"]["spec"]["containers"][0]["image"] == version_spec(1).image
    assert svc["status"]["latestReadyRevisionName"] == "digits-v1"
    assert api.kube.revision_names() == ["digits-v1"]
    assert any("Creating Knative service digits" in m for m in messages)
    assert any("RevisionDeploying" in m for m in messages)  # progress reports the condition while waiting


def test_deploy_is_idempotent_and_keeps_traffic(api, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    again = make_lifecycle().publish(version_spec(1))
    assert not again.created and again.version.name == "v1"
    assert api.kube.revision_names() == ["digits-v1"]
    v2 = make_lifecycle().publish(version_spec(2))
    assert v2.created and v2.version.name == "v2"
    assert default_weights(api) == {"v1": 100}  # a new version moves no traffic
    assert {"revisionName": "digits-v2", "tag": "v2", "percent": 0} in traffic(api)
    assert [v.name for v in make_lifecycle().versions("digits")] == ["v1", "v2"]
    writes = [r for r in api.kube.requests if r[0] == "PATCH"]
    assert writes and all(ct.startswith("application/merge-patch+json") for _, _, ct in writes)


def test_a_revision_that_never_becomes_ready_leaves_traffic_unchanged(api, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().set_traffic("digits", "stable", {"v1": 100})
    before = traffic(api)
    api.kube.fail_revisions["digits-v2"] = ("ContainerMissing", "Unable to fetch image \"registry.example.com/mlfn/digits\": not found")
    with pytest.raises(TargetError) as e:
        make_lifecycle().publish(version_spec(2))
    msg = str(e.value)
    assert "Version v2 (digits-v2) of digits failed" in msg
    assert 'failed: RevisionFailed: Revision "digits-v2" failed with message: Unable to fetch image' in msg
    assert "Traffic is unchanged (default alias: v1=100)" in msg
    assert traffic(api) == before
    assert api.kube.service("digits")["status"]["latestReadyRevisionName"] == "digits-v1"
    # routing to the failed version is refused
    with pytest.raises(TargetError, match="its revision failed"):
        make_lifecycle().set_traffic("digits", "default", {"v1": 50, "v2": 50})
    # the same content again (say the pull secret was fixed): a failed revision is no version,
    # so it is deployed again under a new number, never reported as "already deployed"
    messages = []
    again = make_lifecycle().publish(version_spec(2), progress=messages.append)
    assert again.created and again.version.name == "v3"
    assert any("v2 of digits has this content but failed" in m for m in messages)
    assert make_lifecycle().publish(version_spec(2)).version.name == "v3"  # and now it is idempotent
    # the failed revision can be deleted (it is no longer the template); numbers are never reused
    assert make_lifecycle().delete("digits", "v2").deleted == ["digits/v2"]
    assert make_lifecycle().publish(version_spec(4)).version.name == "v4"


def test_conflicts_are_retried(api, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().publish(version_spec(2))
    api.kube.concurrent_writes = 2
    seen = api.kube.conflicts_returned
    alias = make_lifecycle().set_traffic("digits", "default", {"v1": 80, "v2": 20}).alias
    assert alias.weights == {"v1": 80, "v2": 20}
    assert api.kube.conflicts_returned - seen == 2
    svc = api.kube.service("digits")
    assert "other-writer" in svc["metadata"]["labels"]  # the other writer's change survived
    assert default_weights(api) == {"v1": 80, "v2": 20}


def test_too_many_conflicts_give_up_clearly(api, make_lifecycle, monkeypatch):
    monkeypatch.setattr("mlfn.targets.knative.target.CONFLICT_BACKOFF", 0.001)
    make_lifecycle().publish(version_spec(1))
    api.kube.concurrent_writes = 100
    with pytest.raises(TargetError, match="kept changing under mlfn"):
        make_lifecycle().set_traffic("digits", "stable", {"v1": 100})
    api.kube.concurrent_writes = 0


def test_canary_promote_then_rollback_from_a_fresh_machine(api, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().publish(version_spec(2))
    canary = make_lifecycle().set_traffic("digits", "default", {"v1": 90, "v2": 10})
    assert canary.alias.weights == {"v1": 90, "v2": 10} and canary.alias.previous == {"v1": 100}
    promoted = make_lifecycle().promote("digits", "v2")
    assert promoted.alias.weights == {"v2": 100} and promoted.alias.previous == {"v1": 90, "v2": 10}
    assert promoted.replaced == {"v1": 90, "v2": 10}
    assert traffic(api)[0] == {"revisionName": "digits-v2", "percent": 100}
    history = json.loads(api.kube.service("digits")["metadata"]["annotations"][codec.ANN_HISTORY])
    assert history == {"default": [{"v1": 100}, {"v1": 90, "v2": 10}]}
    back = make_lifecycle().rollback("digits", "default")  # another runner: state is on the cluster
    assert back.alias.weights == {"v1": 90, "v2": 10} and back.replaced == {"v2": 100}
    assert default_weights(api) == {"v1": 90, "v2": 10}
    assert make_lifecycle().rollback("digits", "digits").alias.weights == {"v1": 100}  # the function's own name
    with pytest.raises(TargetError, match="no earlier assignment"):
        make_lifecycle().rollback("digits", "default")


def test_named_aliases_are_tags(api, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().publish(version_spec(2))
    stable = make_lifecycle().promote("digits", "v1", alias="stable").alias
    assert stable.url == f"http://stable-digits.{NS}.example.com" and stable.weights == {"v1": 100}
    make_lifecycle().promote("digits", "v2", alias="stable")
    assert {"revisionName": "digits-v2", "tag": "stable", "percent": 0} in traffic(api)
    status = make_lifecycle().status("digits")
    assert status.url == f"http://digits.{NS}.example.com"
    urls = {a.name: a.url for a in status.aliases}
    assert urls == {"default": f"http://digits.{NS}.example.com", "stable": f"http://stable-digits.{NS}.example.com"}
    assert {v.name: v.url for v in status.versions} == {
        "v1": f"http://v1-digits.{NS}.example.com", "v2": f"http://v2-digits.{NS}.example.com"}
    assert make_lifecycle().rollback("digits", "stable").alias.weights == {"v1": 100}
    with pytest.raises(TargetError, match="no earlier assignment"):  # it started at v1
        make_lifecycle().rollback("digits", "stable")
    assert {"revisionName": "digits-v1", "tag": "stable", "percent": 0} in traffic(api)
    with pytest.raises(TargetError, match="one version only"):
        make_lifecycle().set_traffic("digits", "canary", {"v1": 50, "v2": 50})
    with pytest.raises(NotFoundError, match="v7 of 'digits' does not exist"):
        make_lifecycle().set_traffic("digits", "default", {"v7": 100})
    validate_service(api.kube.service("digits") | {"status": {}})


def test_delete_refuses_a_routed_version(api, make_lifecycle):
    for n in (1, 2, 3):
        make_lifecycle().publish(version_spec(n))
    make_lifecycle().promote("digits", "v2", alias="stable")
    with pytest.raises(TargetError, match="v1 of digits still takes 100% of the default alias"):
        make_lifecycle().delete("digits", "v1", force=True)
    with pytest.raises(TargetError, match=r"Version v2 of 'digits' is routed by alias\(es\) stable.*--force"):
        make_lifecycle().delete("digits", "v2")
    with pytest.raises(TargetError, match="v3 of digits cannot be deleted: it is the Service's template"):
        make_lifecycle().delete("digits", "v3")
    assert api.kube.revision_names() == ["digits-v1", "digits-v2", "digits-v3"]
    assert make_lifecycle().delete("digits", "v2", force=True).deleted == ["digits/stable", "digits/v2"]
    assert api.kube.revision_names() == ["digits-v1", "digits-v3"]
    assert not any(t["revisionName"] == "digits-v2" for t in traffic(api))
    with pytest.raises(NotFoundError, match="Version v2 of 'digits' does not exist"):
        make_lifecycle().delete("digits", "v2")
    assert make_lifecycle().delete("digits").deleted == ["v1", "v3"]
    with pytest.raises(NotFoundError, match="Knative service digits does not exist in namespace mlfn-test"):
        make_lifecycle().status("digits")


class _Ingress(BaseHTTPRequestHandler):
    """Stands in for the cluster's ingress: answers like the function, echoes Host."""

    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers["Host"], self.path, self.headers["Content-Type"], body))
        if b"bad" in body:
            code, out = 400, {"error": "field 'inputs' must be a list"}
        else:
            code, out = 200, {"model": "digits", "predictions": [[0.1, 0.9]], "host": self.headers["Host"]}
        data = json.dumps(out).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def ingress():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ingress)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    _Ingress.seen = []
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_invoke_through_an_address_with_a_host_header(api, make_lifecycle, ingress):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().publish(version_spec(2))
    target = make_lifecycle(host=ingress).target
    r = target.invoke("digits", {"inputs": [[0.0] * 64]})
    assert r.status_code == 200 and r.result["predictions"] == [[0.1, 0.9]] and r.version == "v1"
    assert _Ingress.seen[-1][:3] == (f"digits.{NS}.example.com", "/predict", "application/json")
    assert json.loads(_Ingress.seen[-1][3]) == {"inputs": [[0.0] * 64]}
    target.invoke("digits", {"inputs": []}, version="v2")
    assert _Ingress.seen[-1][0] == f"v2-digits.{NS}.example.com"
    make_lifecycle().promote("digits", "v2", alias="canary")
    assert target.invoke("digits", b"\x89PNG....", alias="canary").version == "v2"
    assert _Ingress.seen[-1][0] == f"canary-digits.{NS}.example.com" and _Ingress.seen[-1][2] == "image/png"
    with pytest.raises(TargetError, match=r"answered HTTP 400: field 'inputs' must be a list"):
        target.invoke("digits", {"inputs": "bad"})
    with pytest.raises(NotFoundError, match="no alias nope"):
        target.invoke("digits", {}, alias="nope")


def test_dry_run_writes_nothing(api, make_lifecycle):
    r = make_lifecycle(dry_run=True).publish(version_spec(1))
    assert r.created and r.version.name == "v1"
    assert api.kube.revision_names() == [] and not [q for q in api.kube.requests if q[0] in ("POST", "PATCH")]
    make_lifecycle().publish(version_spec(1))
    r = make_lifecycle(dry_run=True).publish(version_spec(2))
    assert r.version.name == "v2" and api.kube.revision_names() == ["digits-v1"]
    assert make_lifecycle(dry_run=True).set_traffic("digits", "canary", {"v1": 100}).alias.weights == {"v1": 100}
    assert "canary" not in {t.get("tag") for t in traffic(api)}


def test_wait_times_out_with_the_last_condition(api, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    api.kube.revision_delay = 60
    with pytest.raises(TargetError, match=r"timed out after 0.5s; last state: RevisionDeploying"):
        make_lifecycle(wait_timeout=0.5).publish(version_spec(2))
    assert default_weights(api) == {"v1": 100}


def test_kubeconfig_context_and_namespace(api, make_lifecycle, tmp_path):
    make_lifecycle(context="other").publish(version_spec(1))
    assert api.kube.revision_names(ns="other-ns") == ["digits-v1"]
    make_lifecycle(namespace="explicit").publish(version_spec(1))
    assert api.kube.revision_names(ns="explicit") == ["digits-v1"]
    with pytest.raises(TargetError, match="context 'nope'"):
        make_lifecycle(context="nope").status("digits")
    with pytest.raises(TargetError, match=r"No kubeconfig at .*missing"):
        make_lifecycle(kubeconfig=str(tmp_path / "missing")).status("digits")
    bad = api.write_kubeconfig(tmp_path / "bad", token="wrong")
    with pytest.raises(TargetError, match=r"refused Knative service digits \(401.*check the kubeconfig user"):
        make_lifecycle(kubeconfig=bad).status("digits")


def test_unreachable_api_server(tmp_path, cfg):
    import socket

    from mlfn.targets.knative.target import knative_target

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    kc = tmp_path / "kc"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}]}))
    with pytest.raises(TargetError, match=f"Cannot reach the Kubernetes API at http://127.0.0.1:{port}"):
        knative_target(cfg, kubeconfig=str(kc), request_timeout=2).read("digits")


def test_render_for_gitops(tmp_path, make_lifecycle, api):
    target = make_lifecycle(namespace="prod").target
    (path,) = target.render(version_spec(1), str(tmp_path))
    first = yaml.safe_load(open(path))
    validate_service(first)
    assert first["metadata"]["namespace"] == "prod"
    assert first["spec"]["traffic"][0] == {"revisionName": "digits-v1", "percent": 100}
    text = open(path).read()
    target.render(version_spec(1), str(tmp_path))
    assert open(path).read() == text  # same content: file untouched
    target.render(version_spec(2), str(tmp_path))
    second = yaml.safe_load(open(path))
    validate_service(second, existing=first)
    assert second["spec"]["template"]["metadata"]["name"] == "digits-v2"
    assert second["spec"]["traffic"] == first["spec"]["traffic"]  # traffic unchanged
    assert not api.kube.requests  # no cluster needed


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, mlfn.targets.knative; "
            "bad = [m for m in ('kubernetes', 'tensorflow', 'jsonschema') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_in_cluster_config_when_running_in_a_pod(tmp_path, monkeypatch, cfg):
    """KUBERNETES_SERVICE_HOST set and no kubeconfig: the pod's service account is used."""
    from kubernetes.config import incluster_config

    from mlfn.targets.knative import client
    from mlfn.targets.knative.target import knative_target

    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("not a real certificate")
    (tmp_path / "namespace").write_text("ci-runs\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setattr(client, "SA_NAMESPACE", str(tmp_path / "namespace"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    target = knative_target(cfg, request_timeout=2)
    assert target.client.namespace == "ci-runs"
    with pytest.raises(TargetError, match=r"Cannot reach the in-cluster Kubernetes API \(https://127.0.0.1:1\)"):
        target.read("digits")


def test_a_new_version_drops_settings_the_old_template_had(api, make_lifecycle):
    """The merge patch nulls keys the new template no longer has (RFC 7386)."""
    from mlfn.config import from_dict

    scaled = from_dict({"name": "digits", "deploy": {"knative": {"max_scale": 3, "target": 5}}})
    make_lifecycle(cfg=scaled).publish(version_spec(1))
    ann = api.kube.service("digits")["spec"]["template"]["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/max-scale"] == "3"
    make_lifecycle().publish(version_spec(2, env={}))
    tpl = api.kube.service("digits")["spec"]["template"]
    assert "autoscaling.knative.dev/max-scale" not in tpl["metadata"]["annotations"]
    assert "autoscaling.knative.dev/target" not in tpl["metadata"]["annotations"]
    assert "env" not in tpl["spec"]["containers"][0]
    rev = api.kube.revision("digits-v2")
    assert "autoscaling.knative.dev/max-scale" not in rev["metadata"]["annotations"]


def test_a_first_version_that_fails_says_what_to_do(api, make_lifecycle):
    api.kube.fail_revisions["digits-v1"] = ("ExitCode1", "Container failed with: ModuleNotFoundError: numpy")
    with pytest.raises(TargetError, match=r"Version v1 \(digits-v1\) of digits failed: RevisionFailed: .*numpy.*"
                                          r"deploy again \(that becomes v2\), then promote it"):
        make_lifecycle().publish(version_spec(1))
    assert make_lifecycle().publish(version_spec(2)).version.name == "v2"
    assert make_lifecycle().promote("digits", "v2").alias.weights == {"v2": 100}


def test_transient_api_errors_are_retried(api, make_lifecycle, monkeypatch):
    monkeypatch.setattr("mlfn.targets.knative.target.CONFLICT_BACKOFF", 0.001)
    make_lifecycle().publish(version_spec(1))
    api.kube.fail_next = [503, 429, 500]
    assert make_lifecycle().promote("digits", "v1", alias="stable").alias.weights == {"v1": 100}
    assert api.kube.fail_next == []
    api.kube.fail_next = [503] * 4
    with pytest.raises(TargetError, match=r"rejected Knative service digits \(503\): injected failure 503"):
        make_lifecycle().status("digits")


def test_wait_timeout_comes_from_mlfn_yaml(api, kubeconfig, make_lifecycle):
    from mlfn.config import from_dict
    from mlfn.targets.knative.target import knative_target

    make_lifecycle().publish(version_spec(1))
    api.kube.revision_delay = 60
    cfg = from_dict({"name": "digits", "deploy": {"knative": {"wait_timeout": 1}}})
    target = knative_target(cfg, kubeconfig=kubeconfig, poll_interval=0.05)
    assert target.client.wait_timeout == 1
    with pytest.raises(TargetError, match="timed out after 1s"):
        target.publish(version_spec(2))


def test_a_local_image_tag_is_refused_before_anything_is_sent(api, make_lifecycle, tmp_path):
    """Issue 12 item 17: the local build tag mlfn/NAME:HASH cannot be pulled by a cluster."""
    from mlfn.errors import ConfigError

    local = version_spec(1, image="mlfn/digits:0123456789ab")
    with pytest.raises(ConfigError, match="local tag that no cluster can pull; set deploy.registry"):
        make_lifecycle().publish(local)
    out = tmp_path / "gitops"
    with pytest.raises(ConfigError, match="no cluster can pull"):
        make_lifecycle().target.render(local, str(out))
    assert not [q for q in api.kube.requests if q[0] != "GET"] and not out.exists()
    for pullable in ("localhost:5000/digits:1", "registry.example.com/mlfn/digits:1", "reg:5000/d@sha256:" + "a" * 64):
        assert make_lifecycle().target.render(version_spec(1, image=pullable), str(out))
