"""The auth check in the real server, in-process: the hostile corpus, scopes, open routes,
web actions and non-web activations, key file rotation, per-key metrics, /openapi.json."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from tests.auth.credentials import AUTH_SETTINGS, HS_ENV, accepted, hostile_corpus

PNG_BODY = None


@pytest.fixture(scope="module")
def png(rt_models):
    from tests.runtime.conftest import digit_png

    x = np.load(rt_models / "digits.npz")["x"]
    return digit_png(x[0])


@pytest.fixture()
def auth_server(tmp_path, rt_models, material, monkeypatch):
    monkeypatch.setenv(HS_ENV, material.hs_secret)
    keys_file = tmp_path / "auth" / "keys.json"
    keys_file.parent.mkdir()
    keys_file.write_text(json.dumps(material.key_set))
    fn = make_auth_dir(tmp_path / "fn", rt_models, {**AUTH_SETTINGS, "keys_file": str(keys_file)})
    from tests.runtime.conftest import running

    with running(fn) as (url, srv):
        yield url, keys_file, srv


def make_auth_dir(root, rt_models, auth):
    from tests.runtime.conftest import make_function_dir

    fn = make_function_dir(root, rt_models)
    spec = json.loads((fn / "function.json").read_text())
    spec["auth"] = auth
    (fn / "function.json").write_text(json.dumps(spec))
    return fn


def test_each_hostile_credential_gets_its_status_and_the_server_keeps_serving(auth_server, material, png, capfd):
    url, _, _ = auth_server
    corpus = hostile_corpus(material)
    assert len(corpus) >= 30
    s = requests.Session()
    for name, path, headers, status in corpus:
        method = "POST" if path in ("/predict", "/v2/models/digits/infer") else "GET"
        r = s.request(method, url + path, headers={"Content-Type": "image/png", **headers},
                      data=png if method == "POST" else None, timeout=10)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert "error" in r.json(), name
        if status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), name
        if status == 403:
            assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"], name
        ok = s.post(url + "/predict", data=png, headers={"Content-Type": "image/png", "X-API-Key": material.keys["predict"]},
                    timeout=10)
        assert ok.status_code == 200, name  # still serving
    for name, path, headers in accepted(material):
        method = "POST" if path == "/predict" else "GET"
        r = s.request(method, url + path, headers={"Content-Type": "image/png", **headers},
                      data=png if method == "POST" else None, timeout=10)
        assert r.status_code == 200, (name, r.text)
    metrics = s.get(url + "/metrics", timeout=5).text  # open by config
    out, err = capfd.readouterr()
    for secret in material.secrets():
        assert secret not in metrics and secret not in out and secret not in err
    assert 'mlfn_caller_requests_total{caller="kpredict"}' in metrics
    assert 'mlfn_caller_errors_total{caller="kmeta"} 1' in metrics
    assert 'mlfn_auth_denied_total{status="401"}' in metrics


def test_invalid_token_error_only_when_a_credential_was_sent(auth_server, material):
    url, _, _ = auth_server
    r = requests.post(url + "/predict", json={}, timeout=5)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="mlfn"'
    r = requests.post(url + "/predict", json={}, headers={"X-API-Key": "mlfn_nope"}, timeout=5)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="mlfn", error="invalid_token"'
    assert "mlfn_nope" not in r.text


def test_health_and_readiness_stay_open(auth_server):
    url, _, _ = auth_server
    for path in ("/healthz", "/livez", "/v2/health/live", "/v2/health/ready", "/v2/models/digits/ready"):
        assert requests.get(url + path, timeout=5).status_code == 200, path


def test_unknown_routes_need_a_credential_first(auth_server):
    url, _, _ = auth_server
    assert requests.get(url + "/nowhere", timeout=5).status_code == 401  # no route probing without a key


def test_rate_limit_answers_429_with_retry_after(auth_server, material):
    url, _, _ = auth_server
    h = {"X-API-Key": material.keys["rated"]}
    statuses = [requests.get(url + "/v1/models/digits/metadata", headers=h, timeout=5) for _ in range(8)]
    assert [r.status_code for r in statuses[:5]] == [200] * 5  # the burst
    refused = [r for r in statuses if r.status_code == 429]
    assert refused and all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    time.sleep(0.2)  # 20/s: four tokens back
    assert requests.get(url + "/v1/models/digits/metadata", headers=h, timeout=5).status_code == 200
    assert 'mlfn_caller_throttled_total{caller="krated"}' in requests.get(url + "/metrics", timeout=5).text


def test_revocation_and_new_keys_take_effect_within_reload_seconds(auth_server, material):
    url, keys_file, _ = auth_server
    h = {"X-API-Key": material.keys["predict"]}
    assert requests.get(url + "/v1/models/digits/metadata", headers={"X-API-Key": material.keys["all"]},
                        timeout=5).status_code == 200
    doc = dict(material.key_set)
    doc["keys"] = [k for k in doc["keys"] if k["id"] != "kall"]
    t0 = time.monotonic()
    keys_file.write_text(json.dumps(doc))  # in place: same inode
    while requests.get(url + "/v1/models/digits/metadata", headers={"X-API-Key": material.keys["all"]},
                       timeout=5).status_code != 401:
        assert time.monotonic() - t0 < AUTH_SETTINGS["reload_seconds"] + 1.0
        time.sleep(0.05)
    assert requests.post(url + "/predict", json={"inputs": [[[0.0] * 8] * 8]}, headers=h, timeout=5).status_code != 401


def test_a_removed_jwks_key_stops_its_cached_tokens(auth_server, material):
    url, keys_file, _ = auth_server
    token = {"Authorization": f"Bearer {material.token('e1', 'ES256', scope='digits:metadata')}"}
    assert requests.get(url + "/v1/models/digits/metadata", headers=token, timeout=5).status_code == 200
    doc = json.loads(json.dumps(material.key_set))
    doc["jwks"]["keys"] = [k for k in doc["jwks"]["keys"] if k["kid"] != "e1"]
    os.replace(_write(keys_file.with_suffix(".tmp"), doc), keys_file)  # atomically, as a Secret update is
    deadline = time.monotonic() + AUTH_SETTINGS["reload_seconds"] + 1.0
    while requests.get(url + "/v1/models/digits/metadata", headers=token, timeout=5).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def test_openwhisk_web_activations_are_checked_and_non_web_ones_are_the_platforms(tmp_path, rt_models, material, png):
    """/run: the key set is the package parameter mlfn_auth; web activations need a key in
    __ow_headers; a non-web activation was authenticated by the invoker."""
    from tests.runtime.conftest import running

    fn = make_auth_dir(tmp_path / "fn", rt_models, {"enabled": True, "keys_file": str(tmp_path / "none.json")})
    key_set = json.dumps(material.key_set)
    with running(fn) as (url, srv):
        assert requests.post(url + "/init", json={"value": {}}, timeout=5).status_code == 200
        web = {"__ow_method": "post", "__ow_path": "", "__ow_body": base64.b64encode(png).decode(),
               "__ow_headers": {"content-type": "image/png"}, "mlfn_auth": key_set}
        r = requests.post(url + "/run", json={"value": web}, timeout=5).json()
        assert r["statusCode"] == 401 and r["headers"]["WWW-Authenticate"].startswith("Bearer")
        web["__ow_headers"] = {"content-type": "image/png", "x-api-key": material.keys["metadata"]}
        assert requests.post(url + "/run", json={"value": web}, timeout=5).json()["statusCode"] == 403
        web["__ow_headers"] = {"content-type": "image/png", "authorization": "Bearer " + material.keys["predict"]}
        r = requests.post(url + "/run", json={"value": web}, timeout=5).json()
        assert r["statusCode"] == 200 and r["body"]["model"] == "digits"
        metrics = requests.get(url + "/metrics", timeout=5).text  # web activations are counted per key too
        assert 'mlfn_caller_requests_total{caller="kpredict"} 1' in metrics
        assert 'mlfn_caller_errors_total{caller="kmeta"} 1' in metrics
        plain = {"image": base64.b64encode(png).decode(), "mlfn_auth": key_set}
        r = requests.post(url + "/run", json={"value": plain}, timeout=5)
        assert r.status_code == 200 and r.json()["model"] == "digits"
        # direct HTTP on the same container still demands a key
        assert requests.post(url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=5).status_code == 401


def test_under_knative_init_and_run_need_credentials(tmp_path, rt_models, material, monkeypatch):
    from tests.runtime.conftest import running

    monkeypatch.setenv("K_SERVICE", "digits")
    keys_file = _write(tmp_path / "keys.json", material.key_set)
    fn = make_auth_dir(tmp_path / "fn", rt_models, {"enabled": True, "keys_file": str(keys_file)})
    with running(fn) as (url, srv):
        code = {"value": {"code": "def main(a):\n    return {'owned': True}\n"}}
        assert requests.post(url + "/init", json=code, timeout=5).status_code == 401
        r = requests.post(url + "/init", json=code, headers={"X-API-Key": material.keys["all"]}, timeout=5)
        assert r.status_code == 403  # `*` never grants init
        assert requests.post(url + "/run", json={"value": {}}, timeout=5).status_code == 401


def test_openapi_document_is_valid_and_names_tensors_and_security(auth_server):
    from openapi_spec_validator import validate

    url, _, _ = auth_server
    doc = requests.get(url + "/openapi.json", timeout=5).json()  # open by config
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert set(doc["components"]["securitySchemes"]) == {"apiKey", "bearer"}
    inputs = doc["components"]["schemas"]["digits.inputs"]
    tensor = next(iter(inputs["properties"].values()))["x-mlfn-tensor"]
    assert tensor["datatype"] == "FP32" and tensor["shape"][0] == -1
    assert "image/png" in inputs["x-mlfn-image-types"]
    assert doc["paths"]["/predict"]["post"]["x-mlfn-scope"] == "predict"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "/v2/models/{name}/infer" in doc["paths"]


def test_without_auth_everything_is_open_and_openapi_says_so(rt_models, tmp_path):
    from tests.runtime.conftest import make_function_dir, running

    with running(make_function_dir(tmp_path / "fn", rt_models)) as (url, srv):
        assert requests.post(url + "/predict", json={"inputs": [[[0.0] * 8] * 8]}, timeout=5).status_code == 200
        doc = requests.get(url + "/openapi.json", timeout=5).json()
        assert doc["components"]["securitySchemes"] == {} and doc["paths"]["/predict"]["post"]["security"] == []


def test_the_api_key_path_never_imports_pyjwt(tmp_path, rt_models, material):
    keys_file = _write(tmp_path / "keys.json", material.key_set)
    fn = make_auth_dir(tmp_path / "fn", rt_models, {"enabled": True, "keys_file": str(keys_file)})
    code = ("import sys, json, urllib.request; from tests.runtime.conftest import running\n"
            f"with running({str(fn)!r}) as (url, srv):\n"
            f"    rq = urllib.request.Request(url + '/v1/models/digits/metadata', headers={{'X-API-Key': {material.keys['all']!r}}})\n"
            "    assert urllib.request.urlopen(rq).status == 200\n"
            "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": ":".join(sys.path)})
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stderr
