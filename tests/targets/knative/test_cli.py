"""The shared commands (mlfn traffic/status/promote/rollback/delete/versions) drive the
Knative target exactly like the others, against the fake API server."""
import json

from click.testing import CliRunner

from mlfn.cli import main

from .conftest import NS, version_spec


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_commands_drive_knative(api, kubeconfig, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().publish(version_spec(2))
    k = ["-t", "knative", "--kubeconfig", kubeconfig]
    code, out = run("traffic", "digits", "v1=90", "v2=10", *k, "-o", "json")
    assert code == 0, out
    assert json.loads(out)["alias"]["weights"] == {"v1": 90, "v2": 10}
    code, out = run("promote", "digits", "v2", "--alias", "stable", *k)
    assert code == 0, out
    code, out = run("status", "digits", *k, "-o", "json")
    assert code == 0, out
    st = json.loads(out)
    assert st["url"] == f"http://digits.{NS}.example.com"
    assert {a["name"]: a["weights"] for a in st["aliases"]} == {"default": {"v1": 90, "v2": 10}, "stable": {"v2": 100}}
    code, out = run("versions", "digits", *k, "-o", "json")
    assert [v["name"] for v in json.loads(out)] == ["v1", "v2"]
    code, out = run("rollback", "digits", *k, "-o", "json")
    assert code == 0 and json.loads(out)["alias"]["weights"] == {"v1": 100}, out
    code, out = run("delete", "digits", "v1", *k)
    assert code != 0 and "still takes 100% of the default alias" in out and "Traceback" not in out
    code, out = run("traffic", "digits", "v1=50", "v2=50", "--alias", "canary", *k)
    assert code != 0 and "can point to one version only" in out


def test_dry_run_lists_the_patch(api, kubeconfig, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    code, out = run("promote", "digits", "v1", "--alias", "stable", "--dry-run",
                    "-t", "knative", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert f"PATCH {api.url}/apis/serving.knative.dev/v1/namespaces/{NS}/services/digits" in out
    assert '"tag": "stable"' in out
    assert "stable" not in {t.get("tag") for t in api.kube.service("digits")["spec"]["traffic"]}


def test_dry_run_delete_sends_nothing(api, kubeconfig, make_lifecycle):
    make_lifecycle().publish(version_spec(1))
    make_lifecycle().publish(version_spec(2))
    make_lifecycle().promote("digits", "v2")
    code, out = run("delete", "digits", "v1", "--dry-run", "-t", "knative", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert f"DELETE {api.url}/apis/serving.knative.dev/v1/namespaces/{NS}/revisions/digits-v1" in out
    assert api.kube.revision_names() == ["digits-v1", "digits-v2"]


def test_render_command_for_gitops(tmp_path):
    import yaml

    from mlfn.targets.knative.validate import validate_service

    (tmp_path / "mlfn.yaml").write_text(
        "name: digits\ndeploy:\n  target: knative\n  memory: 512\n  knative:\n    namespace: prod\n    max_scale: 3\n")
    out = tmp_path / "deploy"
    image1 = "registry.example.com/mlfn/digits@sha256:" + "1" * 64
    code, text = run("render", "-c", str(tmp_path / "mlfn.yaml"), "--image", image1, "--out", str(out))
    assert code == 0, text
    doc = yaml.safe_load((out / "digits.knative.yaml").read_text())
    validate_service(doc)
    assert doc["metadata"]["namespace"] == "prod"
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == image1
    assert doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    assert doc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "3"
    image2 = image1.replace("1" * 64, "2" * 64)
    code, text = run("render", "-c", str(tmp_path / "mlfn.yaml"), "--image", image2, "--out", str(out))
    assert code == 0, text
    doc2 = yaml.safe_load((out / "digits.knative.yaml").read_text())
    assert doc2["spec"]["template"]["metadata"]["name"] == "digits-v2"
    assert doc2["spec"]["traffic"] == doc["spec"]["traffic"]


def test_render_refuses_a_local_image_tag(tmp_path):
    (tmp_path / "mlfn.yaml").write_text("name: digits\ndeploy:\n  target: knative\n")
    result = CliRunner().invoke(main, ["render", "-c", str(tmp_path / "mlfn.yaml"), "--image", "mlfn/digits:abc",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "The image mlfn/digits:abc is a local tag that no cluster can pull" in result.stderr
    assert not (tmp_path / "out").exists()


def test_render_and_deploy_without_a_registry_refuse_before_building(tmp_path, monkeypatch, api, kubeconfig):
    import mlfn.image

    def no_build(*a, **kw):
        raise AssertionError("the image was built although the cluster could not pull it")

    monkeypatch.setattr(mlfn.image, "build_image", no_build)
    (tmp_path / "mlfn.yaml").write_text("name: digits\ndeploy:\n  target: knative\n")
    for args in (["render", "--out", str(tmp_path / "out")], ["deploy", "--kubeconfig", kubeconfig]):
        result = CliRunner().invoke(main, [*args, "-c", str(tmp_path / "mlfn.yaml")])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "The image mlfn/digits is a local tag that no cluster can pull; set deploy.registry" in result.stderr
    assert not [q for q in api.kube.requests if q[0] != "GET"]


def test_a_dry_run_deploy_names_the_image_it_would_push(tmp_path, monkeypatch, api, kubeconfig):
    from types import SimpleNamespace

    import mlfn.image

    pushed = []

    def fake_build(cfg, push=None, progress=None, **kw):
        pushed.append(push)
        return SimpleNamespace(image="mlfn/digits:0123abcd", repo_digest=None, digest="sha256:" + "1" * 64,
                               model_sha256="m", quantization="int8", pipeline_hash="p", content_hash="c" * 64)

    monkeypatch.setattr(mlfn.image, "build_image", fake_build)
    (tmp_path / "mlfn.yaml").write_text("name: digits\ndeploy:\n  target: knative\n  registry: reg.example.com/ml/digits\n")
    result = CliRunner().invoke(main, ["deploy", "--dry-run", "-c", str(tmp_path / "mlfn.yaml"),
                                       "--kubeconfig", kubeconfig, "-o", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert pushed == [None]  # a dry run pushes nothing
    (create,) = [r for r in out["requests"] if r["method"] == "POST"]
    assert create["body"]["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example.com/ml/digits:0123abcd"
    assert out["version"]["name"] == "v1" and not [q for q in api.kube.requests if q[0] != "GET"]
