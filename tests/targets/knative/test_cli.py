"""The shared commands (mlfn traffic/status/promote/rollback/delete/versions) drive the
Knative target exactly like the others, against the fake API server."""
import json

from click.testing import CliRunner

from mlfn.cli import main

from .conftest import NS, version_spec


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_commands_drive_knative(api, kubeconfig, make_target):
    make_target().publish(version_spec(1))
    make_target().publish(version_spec(2))
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


def test_dry_run_lists_the_patch(api, kubeconfig, make_target):
    make_target().publish(version_spec(1))
    code, out = run("promote", "digits", "v1", "--alias", "stable", "--dry-run",
                    "-t", "knative", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert f"PATCH {api.url}/apis/serving.knative.dev/v1/namespaces/{NS}/services/digits" in out
    assert '"tag": "stable"' in out
    assert "stable" not in {t.get("tag") for t in api.kube.service("digits")["spec"]["traffic"]}


def test_dry_run_delete_sends_nothing(api, kubeconfig, make_target):
    make_target().publish(version_spec(1))
    make_target().publish(version_spec(2))
    make_target().promote("digits", "v2")
    code, out = run("delete", "digits", "v1", "--dry-run", "-t", "knative", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert f"DELETE {api.url}/apis/serving.knative.dev/v1/namespaces/{NS}/revisions/digits-v1" in out
    assert api.kube.revision_names() == ["digits-v1", "digits-v2"]
