"""Issue 2's acceptance path through the CLI: the digits function image, started with
`mlfn run`, invoked with `mlfn invoke` through the OpenWhisk protocol and the predict
endpoint; then the exact bodies the real OpenWhisk invoker sends, and bad requests."""
import base64
import json
import time
import uuid

import pytest
import requests
from click.testing import CliRunner

from mlfn.cli import main

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def running(digits_project, digits_image):
    r = CliRunner().invoke(main, ["run", "-c", str(digits_project), "--image", digits_image.image,
                                  "--output", "json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    yield info
    CliRunner().invoke(main, ["run", "-c", str(digits_project), "--stop"])


def _label_of(png):
    return png.stem.split("-")[-1]


def test_invoke_both_protocols_through_the_cli(running, digits_project):
    pngs = sorted((digits_project / "inputs").glob("digit-*.png"))
    assert pngs
    for png in pngs:
        for protocol in ("openwhisk", "predict"):
            r = CliRunner().invoke(main, ["invoke", running["url"], "--protocol", protocol, "--image", str(png),
                                          "--output", "json"])
            assert r.exit_code == 0, r.output
            pred = json.loads(r.output)["result"]["predictions"][0]
            assert pred["label"] == _label_of(png), (png.name, protocol, pred)
    text = CliRunner().invoke(main, ["invoke", running["url"], "--image", str(pngs[0])])
    assert text.output.split()[0] == _label_of(pngs[0])


def test_exact_invoker_bodies(running, digits_project):
    """/init as the invoker sends it for a docker action (no code, __OW_* env as strings),
    a second /init refused, /run with deadline as a string."""
    url = running["url"]
    png = sorted((digits_project / "inputs").glob("digit-*.png"))[0]
    init = {"value": {"name": "digits", "main": "main", "binary": False,
                      "env": {"__OW_API_HOST": "https://openwhisk.example", "__OW_NAMESPACE": "guest",
                              "__OW_ACTION_NAME": "/guest/digits/v1", "__OW_ACTION_VERSION": "0.0.1"}}}
    first = requests.post(f"{url}/init", json=init, timeout=30)
    assert first.status_code in (200, 403)  # the CLI test above may have initialized it already
    assert requests.post(f"{url}/init", json=init, timeout=30).status_code == 403
    body = {
        "value": {"image": base64.b64encode(png.read_bytes()).decode()},
        "namespace": "guest", "action_name": "/guest/digits/v1", "action_version": "0.0.1",
        "activation_id": uuid.uuid4().hex, "transaction_id": uuid.uuid4().hex,
        "deadline": str(int(time.time() * 1000) + 60000),
    }
    r = requests.post(f"{url}/run", json=body, timeout=30)
    assert r.status_code == 200
    assert r.json()["predictions"][0]["label"] == _label_of(png)


@pytest.mark.parametrize(
    "path, payload, word",
    [
        ("/predict", {"image": base64.b64encode(b"this is not an image").decode()}, "image"),
        ("/predict", {"inputs": [[1.0, 2.0, 3.0]]}, "shape"),
        ("/predict", "{not json", "JSON"),
    ],
)
def test_bad_requests_get_4xx_and_the_function_keeps_serving(running, digits_project, path, payload, word):
    url = running["url"]
    data = payload if isinstance(payload, str) else json.dumps(payload)
    r = requests.post(f"{url}{path}", data=data, headers={"Content-Type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500
    assert word.lower() in r.json()["error"].lower()
    png = sorted((digits_project / "inputs").glob("digit-*.png"))[0]
    ok = requests.post(f"{url}/predict", json={"image": base64.b64encode(png.read_bytes()).decode()}, timeout=30)
    assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == _label_of(png)


def _argmax_of(protocol, result):
    if protocol == "v2":
        out = result["outputs"][0]
        rows = [out["data"][i:i + out["shape"][1]] for i in range(0, len(out["data"]), out["shape"][1])]
    else:
        rows = result.get("predictions") or result.get("outputs")
    return [str(max(range(len(r)), key=r.__getitem__)) for r in rows]


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_invoke_v2_and_tf_serving_without_naming_the_model(running, digits_project, protocol):
    """`mlfn invoke URL --protocol v2|v1 --image` finds the function's only model and sends the
    image in that protocol's own shape (a BYTES tensor; TF Serving `{"b64": ...}` instances),
    and `--json` with a bare nested list becomes the model's input tensor."""
    pngs = sorted((digits_project / "inputs").glob("digit-*.png"))[:2]
    args = ["invoke", running["url"], "--protocol", protocol, "--output", "json"]
    r = CliRunner().invoke(main, args + [a for p in pngs for a in ("--image", str(p))])
    assert r.exit_code == 0, r.output
    assert _argmax_of(protocol, json.loads(r.output)["result"]) == [_label_of(p) for p in pngs]
    r = CliRunner().invoke(main, args + ["--json", str(digits_project / "inputs" / "digit-3.json")])
    assert r.exit_code == 0, r.output
    assert _argmax_of(protocol, json.loads(r.output)["result"]) == ["3"]
    r = CliRunner().invoke(main, args + ["--model", "nope", "--image", str(pngs[0])])
    assert r.exit_code == 1 and "model 'nope'" in r.output and "Traceback" not in r.output
