"""The OpenWhisk action protocol (mlfn_runtime.whisk_action) through the real server, with the invoker's exact bodies."""
import base64
import io
import json
import os
import zipfile

import pytest
import requests

from mlfn_runtime.whisk_action import SENTINEL

from .conftest import b64, digit_png, running

ACTIVATION = {
    "namespace": "guest", "action_name": "/guest/digits/v1", "action_version": "0.0.1",
    "activation_id": "a1b2c3d4e5f6", "transaction_id": "tid-1", "deadline": "1764460000000",
}
INIT_ENV = {"__OW_API_HOST": "https://ow.example:3233", "__OW_NAMESPACE": "guest",
            "__OW_ACTION_NAME": "/guest/digits/v1", "__OW_ACTION_VERSION": "0.0.1",
            "__OW_ACTIVATION_ID": "init-0", "__OW_TRANSACTION_ID": "tid-0",
            "__OW_DEADLINE": "1764460000000", "MLFN_TEST_PARAM": "from-init"}


def post(url, path, body):
    return requests.post(url + path, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=30)


def test_docker_action_init_then_run_with_invoker_bodies(digits_dir, digits, capfd):
    x, y = digits
    with running(digits_dir) as (url, _):
        # a docker (blackbox) action: no code, env as strings, main/binary present
        r = post(url, "/init", {"value": {"name": "digits/v1", "main": "main", "binary": False, "env": INIT_ENV}})
        assert r.status_code == 200
        assert os.environ["MLFN_TEST_PARAM"] == "from-init" and os.environ["__OW_API_HOST"].startswith("https://")
        r = post(url, "/run", {"value": {"image": b64(digit_png(x[0]))}, **ACTIVATION})
        assert r.status_code == 200
        body = r.json()
        assert "error" not in body and body["predictions"][0]["label"] == str(y[0])
        # second /init refused
        r = post(url, "/init", {"value": {"name": "digits/v1", "main": "main", "binary": False, "env": {}}})
        assert r.status_code == 403 and "error" in r.json()
        # bad input: application error (200 + error), then the next activation succeeds
        r = post(url, "/run", {"value": {"image": "bm90IGFuIGltYWdl"}, **ACTIVATION})
        assert r.status_code == 200 and "'image': is not an image" in r.json()["error"]
        r = post(url, "/run", {"value": {"images": [b64(digit_png(x[1]))] * 2}, **ACTIVATION})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    out, err = capfd.readouterr()
    # one sentinel after the /init and after each of the 3 activations, on both streams
    assert out.count(SENTINEL + "\n") == 4 and err.count(SENTINEL + "\n") == 4
    for k in ("__OW_ACTIVATION_ID", "__OW_DEADLINE"):  # activation env is not left behind
        assert os.environ.get(k) == INIT_ENV[k]


CODE = '''
import os
def main(args):
    keys = ["__OW_ACTIVATION_ID", "__OW_DEADLINE", "__OW_NAMESPACE", "__OW_ACTION_NAME", "__OW_API_HOST", "GREETING"]
    from mlfn_runtime.activation import current_function
    fn = current_function()
    return {"args": args, "env": {k: os.environ.get(k) for k in keys}, "models": list(fn.models) if fn else None}
def fail(args):
    raise RuntimeError("boom")
def not_a_dict(args):
    return "text"
'''


def test_code_action_plain_source_gets_activation_env(digits_dir, code_actions):
    with running(digits_dir) as (url, _):
        r = post(url, "/init", {"value": {"name": "router", "main": "main", "binary": False, "code": CODE,
                                          "env": {"GREETING": "hi", "__OW_API_HOST": "https://h", **code_actions}}})
        assert r.status_code == 200
        r = post(url, "/run", {"value": {"n": 1, "s": "☃"}, **ACTIVATION})
        body = r.json()
        assert r.status_code == 200 and body["args"] == {"n": 1, "s": "☃"}
        assert body["env"] == {"__OW_ACTIVATION_ID": "a1b2c3d4e5f6", "__OW_DEADLINE": "1764460000000",
                               "__OW_NAMESPACE": "guest", "__OW_ACTION_NAME": "/guest/digits/v1",
                               "__OW_API_HOST": "https://h", "GREETING": "hi"}
        assert body["models"] == ["digits"]  # code actions can call the bundled model in-process


@pytest.mark.parametrize("main,status,message", [
    ("fail", 502, "boom"), ("not_a_dict", 502, "did not return a dictionary"),
])
def test_code_action_errors_are_developer_errors(main, status, message, code_actions):
    with running(None) as (url, _):
        assert post(url, "/init", {"value": {"name": "x", "main": main, "binary": False, "code": CODE, "env": code_actions}}).status_code == 200
        r = post(url, "/run", {"value": {}, **ACTIVATION})
        assert r.status_code == status and message in r.json()["error"]


def test_code_action_zip_with_main_py_and_custom_entry_point(code_actions):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__main__.py", "from helper import twice\ndef handler(args):\n    return {'v': twice(args['v'])}\n")
        z.writestr("helper.py", "def twice(v):\n    return 2 * v\n")
    code = base64.b64encode(buf.getvalue()).decode()
    with running(None) as (url, _):
        r = post(url, "/init", {"value": {"name": "z", "main": "handler", "binary": True, "code": code, "env": code_actions}})
        assert r.status_code == 200, r.text
        assert post(url, "/run", {"value": {"v": 21}, **ACTIVATION}).json() == {"v": 42}


def test_init_errors(code_actions):
    with running(None) as (url, _):
        r = post(url, "/init", {"value": {"name": "x", "main": "main", "binary": False, "code": "def main(:\n", "env": code_actions}})
        assert r.status_code == 502 and "Initialization has failed" in r.json()["error"]
        r = post(url, "/init", {"value": {"name": "x", "main": "nope", "binary": False, "code": CODE, "env": code_actions}})
        assert r.status_code == 502 and "no function 'nope'" in r.json()["error"]
        r = post(url, "/init", {"value": {"name": "x", "main": "main", "binary": True, "code": "bm90IGEgemlw", "env": code_actions}})
        assert r.status_code == 502 and "not a zip" in r.json()["error"]
        r = post(url, "/init", {"value": {"name": "x", "main": "main", "binary": False, "env": {}}})
        assert r.status_code == 502 and "no function" in r.json()["error"]


def test_web_action_raw_http_image_and_json(digits_dir, digits):
    x, y = digits
    png = digit_png(x[0])
    with running(digits_dir) as (url, _):
        post(url, "/init", {"value": {"name": "digits", "main": "main", "binary": False, "env": {}}})
        # raw-http: binary body base64-encoded in __ow_body
        web = {"__ow_method": "post", "__ow_headers": {"content-type": "image/png"}, "__ow_path": "",
               "__ow_query": "", "__ow_body": b64(png)}
        r = post(url, "/run", {"value": web, **ACTIVATION})
        body = r.json()
        assert r.status_code == 200 and body["statusCode"] == 200
        assert body["body"]["predictions"][0]["label"] == str(y[0])
        # raw-http JSON body: base64 too
        web["__ow_headers"] = {"content-type": "application/json"}
        web["__ow_body"] = b64(json.dumps({"image": b64(png)}).encode())
        assert post(url, "/run", {"value": web, **ACTIVATION}).json()["body"]["predictions"][0]["label"] == str(y[0])
        # non-raw web action: JSON fields promoted to parameters
        web = {"__ow_method": "post", "__ow_headers": {"content-type": "application/json"}, "__ow_path": "",
               "image": b64(png)}
        assert post(url, "/run", {"value": web, **ACTIVATION}).json()["body"]["predictions"][0]["label"] == str(y[0])
        # bad input: an HTTP 400 for the web caller, a successful activation for the invoker
        web = {"__ow_method": "post", "__ow_headers": {"content-type": "image/png"}, "__ow_body": b64(b"nope")}
        r = post(url, "/run", {"value": web, **ACTIVATION})
        assert r.status_code == 200 and r.json()["statusCode"] == 400 and "error" in r.json()["body"]


@pytest.mark.parametrize("env", [{"A=B": "x"}, {"": "x"}, {"OK": "nul\0byte"}])
def test_init_env_that_cannot_be_exported_is_400_and_init_can_be_retried(digits_dir, env):
    with running(digits_dir) as (url, _):
        r = post(url, "/init", {"value": {"name": "digits", "main": "main", "binary": False, "env": env}})
        assert r.status_code == 400 and "cannot be an environment variable" in r.json()["error"]
        r = post(url, "/init", {"value": {"name": "digits", "main": "main", "binary": False, "env": {}}})
        assert r.status_code == 200


def test_web_action_headers_that_are_not_an_object_are_400(digits_dir):
    with running(digits_dir) as (url, _):
        post(url, "/init", {"value": {"name": "digits", "main": "main", "binary": False, "env": {}}})
        web = {"__ow_method": "post", "__ow_headers": ["content-type", "image/png"], "__ow_body": "{}"}
        r = post(url, "/run", {"value": web, **ACTIVATION})
        assert r.status_code == 200 and r.json()["statusCode"] == 400
        assert "'__ow_headers' must be an object" in r.json()["body"]["error"]
