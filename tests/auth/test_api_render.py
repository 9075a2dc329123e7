"""`mlfn render --target openwhisk --api /digits`: the swagger `wsk api create --config-file` takes."""
import json

from click.testing import CliRunner

from mlfn.cli import main


def _render(tmp_path, monkeypatch, *args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlfn.yaml").write_text("name: digits\nauth: {enabled: true}\n")
    return CliRunner().invoke(main, ["render", *args, "--out", str(tmp_path / "out")], catch_exceptions=False)


def test_openwhisk_api_swagger_is_valid_and_names_the_web_action(tmp_path, monkeypatch):
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV2SpecValidator

    r = _render(tmp_path, monkeypatch, "--target", "openwhisk", "--api", "/digits", "--apihost", "https://ow.example",
                "--auth", "user:pass", "--namespace", "guest")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "out" / "api.json").read_text())
    validate(doc, cls=OpenAPIV2SpecValidator)
    # what the wsk CLI checks before sending it (basePath, info.title, paths, x-openwhisk)
    assert doc["basePath"] == "/digits" and doc["info"]["title"] == "digits" and doc["paths"]
    op = doc["paths"]["/predict"]["post"]
    assert op["x-openwhisk"] == {"namespace": "guest", "package": "digits", "action": "default",
                                 "url": "https://ow.example/api/v1/web/guest/digits/default.http"}
    case = doc["x-gateway-configuration"]["assembly"]["execute"][0]["operation-switch"]["case"][0]
    assert case["operations"] == [op["operationId"]] and case["execute"][0]["invoke"]["target-url"].endswith(".http")
    assert "user:pass" not in json.dumps(doc) and "pass" not in r.output


def test_api_on_knative_and_bad_base_paths_are_one_sentence(tmp_path, monkeypatch):
    r = _render(tmp_path, monkeypatch, "--target", "knative", "--api", "/digits")
    assert r.exit_code != 0 and "/openapi.json" in r.output and "Traceback" not in r.output
    r = _render(tmp_path, monkeypatch, "--target", "openwhisk", "--api", "digits here", "--apihost",
                "https://ow.example", "--auth", "u:p")
    assert r.exit_code != 0 and "base path" in r.output
