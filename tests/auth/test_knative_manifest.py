"""The Knative Service of a function with `auth:` mounts the key set Secret by reference."""
import json

import jsonschema
import pytest
import yaml

from mlfn.config import from_dict
from mlfn.targets.knative import manifest as km
from mlfn.targets.knative.validate import validate_service
from tests.targets.knative.conftest import version_spec


@pytest.fixture(scope="module")
def real_schema(specs_dir):
    crd = yaml.safe_load((specs_dir / "knative" / "service.yaml").read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def _render(cfg):
    return km.render_service(cfg, version_spec(1), 1, namespace="mlfn-test",
                             traffic=[{"revisionName": "digits-v1", "percent": 100}])


@pytest.mark.parametrize("auth, secret", [({"enabled": True}, "digits-mlfn-auth"),
                                          ({"enabled": True, "secret": "team-keys"}, "team-keys")])
def test_the_secret_is_mounted_by_reference_read_only(real_schema, auth, secret):
    manifest = _render(from_dict({"name": "digits", "auth": auth}))
    jsonschema.Draft7Validator(real_schema).validate(manifest)
    validate_service(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "mlfn-auth", "secret": {"secretName": secret, "optional": True}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "mlfn-auth", "mountPath": "/var/run/mlfn/auth",
                                                     "readOnly": True}]
    assert "mlfn_auth" not in json.dumps(manifest) and "keys.json" not in json.dumps(manifest)  # by reference only


def test_without_auth_nothing_is_mounted():
    pod = _render(from_dict({"name": "digits"}))["spec"]["template"]["spec"]
    assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]


def test_keys_on_knative_live_in_the_secret_the_service_mounts(tmp_path, monkeypatch):
    """`mlfn keys` writes keys.json (hashes only) into <name>-mlfn-auth; list and revoke read it back."""
    import base64

    from click.testing import CliRunner

    from mlfn.cli import main
    from mlfn_runtime.api_keys import hash_key
    from tests.targets.knative.fake_apiserver import FakeApiServer

    monkeypatch.chdir(tmp_path)
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="mlfn-test")
        common = ["-t", "knative", "--kubeconfig", kubeconfig]
        r = CliRunner().invoke(main, ["keys", "create", "digits", "--scope", "digits:predict", *common, "-o", "json"])
        assert r.exit_code == 0, r.output
        key, key_id = json.loads(r.stdout)["key"], json.loads(r.stdout)["info"]["id"]
        secret = api.kube.secrets[("mlfn-test", "digits-mlfn-auth")]
        stored = json.loads(base64.b64decode(secret["data"]["keys.json"]))
        assert stored["keys"][0]["sha256"] == hash_key(key) and key not in json.dumps(secret)
        listed = CliRunner().invoke(main, ["keys", "list", "digits", *common])
        assert key_id in listed.stdout and key not in listed.stdout
        r = CliRunner().invoke(main, ["keys", "revoke", "digits", key_id, *common])
        assert r.exit_code == 0
        stored = json.loads(base64.b64decode(api.kube.secrets[("mlfn-test", "digits-mlfn-auth")]["data"]["keys.json"]))
        assert stored["keys"] == []
