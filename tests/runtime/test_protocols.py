"""Open Inference Protocol v2 (with the real tritonclient.http) and TF Serving REST."""
import json
import struct

import numpy as np
import pytest
import requests

from .conftest import b64, digit_png, make_function_dir, running


@pytest.fixture(scope="module")
def two_io_server(tmp_path_factory, rt_models):
    d = make_function_dir(tmp_path_factory.mktemp("fn") / "two", rt_models, name="two", models=[
        {"name": "two", "file": "two_io.tflite", "pre": [], "post": []}])
    with running(d) as (url, _):
        yield url


# ------------------------------------------------------------------ OIP v2 with tritonclient

def test_tritonclient_health_metadata_and_infer_binary_and_json(digits_server, digits):
    import tritonclient.http as httpclient

    x, y = digits
    client = httpclient.InferenceServerClient(digits_server.split("//")[1])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"] == [-1, 10]
    assert client.get_server_metadata()["name"] == "mlfn"
    batch = x[:5, :, :, None].astype(np.float32)
    results = []
    for binary in (True, False):
        inp = httpclient.InferInput("pixels", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary)
        out = httpclient.InferRequestedOutput("output_0", binary_data=binary)
        res = client.infer("digits", [inp], outputs=[out], request_id="req-1")
        logits = res.as_numpy("output_0")
        assert logits.shape == (5, 10) and res.get_response()["id"] == "req-1"
        results.append(logits)
    assert np.allclose(results[0], results[1])
    assert (results[0].argmax(1) == y[:5]).mean() >= 0.8
    # no outputs named: tritonclient asks for binary_data_output
    inp = httpclient.InferInput("pixels", [1, 8, 8, 1], "FP32")
    inp.set_data_from_numpy(batch[:1])
    assert client.infer("digits", [inp]).as_numpy("output_0").shape == (1, 10)


def test_tritonclient_compressed_requests(digits_server, digits):
    import tritonclient.http as httpclient

    x, y = digits
    client = httpclient.InferenceServerClient(digits_server.split("//")[1])
    inp = httpclient.InferInput("pixels", [4, 8, 8, 1], "FP32")
    inp.set_data_from_numpy(x[:4, :, :, None].astype(np.float32))
    for algo in ("gzip", "deflate"):
        res = client.infer("digits", [inp], request_compression_algorithm=algo, response_compression_algorithm=algo)
        assert list(res.as_numpy("output_0").argmax(1)) == list(y[:4])


def test_compressed_bombs_are_413(digits_server):
    import gzip

    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    r = requests.post(digits_server + "/predict", data=bomb, timeout=10,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 413 and "decompressed" in r.json()["error"]
    r = requests.post(digits_server + "/predict", data=b"not gzip", timeout=10,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 400 and "cannot be decompressed" in r.json()["error"]


def test_tritonclient_bytes_input_is_an_encoded_image(digits_server, digits):
    import tritonclient.http as httpclient

    x, y = digits
    client = httpclient.InferenceServerClient(digits_server.split("//")[1])
    images = np.array([digit_png(x[i]) for i in range(3)], dtype=np.object_)
    inp = httpclient.InferInput("pixels", [3], "BYTES")
    inp.set_data_from_numpy(images, binary_data=True)
    logits = client.infer("digits", [inp]).as_numpy("output_0")
    assert logits.shape == (3, 10) and list(logits.argmax(1)) == list(y[:3])


def test_tritonclient_errors_raise_with_the_message(digits_server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(digits_server.split("//")[1])
    inp = httpclient.InferInput("pixels", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"has shape \[3\] but model 'digits' takes \[8, 8, 1\]"):
        client.infer("digits", [inp])
    with pytest.raises(InferenceServerException, match="model 'nope' is not in"):
        client.get_model_metadata("nope")


def test_v2_json_nested_data_multi_io_and_outputs_selection(two_io_server):
    url = two_io_server + "/v2/models/two/infer"
    body = {"inputs": [{"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
                       {"name": "b", "shape": [2, 3], "datatype": "INT32", "data": [1, 1, 1, 2, 2, 2]}],
            "outputs": [{"name": "output_1"}]}
    r = requests.post(url, json=body, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "two" and [o["name"] for o in out["outputs"]] == ["output_1"]
    assert out["outputs"][0] == {"name": "output_1", "datatype": "FP32", "shape": [2, 3],
                                 "data": [1.0, 2.0, 3.0, 8.0, 10.0, 12.0]}
    meta = requests.get(two_io_server + "/v2/models/two", timeout=5).json()
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
    assert requests.get(two_io_server + "/v2/models/two/versions/1/ready", timeout=5).json()["ready"] is True
    assert requests.get(two_io_server + "/v2/models/two/versions/7", timeout=5).status_code == 404


@pytest.mark.parametrize("inputs,message", [
    ([{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}], "has 2 elements but its shape [1, 3] needs 3"),
    ([{"name": "a", "shape": [1, 3], "datatype": "BF16", "data": [1, 2, 3]}], "'BF16' is not supported"),
    ([{"name": "a", "shape": [1, 3], "datatype": "INT8", "data": [1, 2, 300]}], "out of range for INT8"),
    ([{"name": "a", "shape": [1, 3], "datatype": "INT32", "data": [1, 2.5, 3]}], "holds fractions"),
    ([{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": ["x", 1, 2]}], "must hold only numbers"),
    ([{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "input 'b' of model 'two' is missing"),
    ([{"name": "zz", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "has no input 'zz'"),
    ([], "needs 'inputs'"),
])
def test_v2_bad_requests_are_400_with_error(two_io_server, inputs, message):
    r = requests.post(two_io_server + "/v2/models/two/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 400 and message in r.json()["error"]


def test_v2_nan_in_binary_data_is_400(two_io_server):
    head = json.dumps({"inputs": [
        {"name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
        {"name": "b", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}).encode()
    data = head + struct.pack("<3f", 1, float("nan"), 3) + struct.pack("<3f", 1, 2, 3)
    r = requests.post(two_io_server + "/v2/models/two/infer", data=data,
                      headers={"Inference-Header-Content-Length": str(len(head))}, timeout=10)
    assert r.status_code == 400 and "input 'a' (inputs[0]) holds NaN" in r.json()["error"]


# ------------------------------------------------------------------ TF Serving REST

def test_tfserving_status_metadata_and_row_predict(digits_server, digits):
    x, y = digits
    base = digits_server + "/v1/models/digits"
    status = requests.get(base, timeout=5).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = requests.get(base + "/metadata", timeout=5).json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["pixels"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["pixels"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    r = requests.post(base + ":predict", json={"instances": x[:3, :, :, None].tolist()}, timeout=10)
    preds = np.array(r.json()["predictions"])
    assert preds.shape == (3, 10) and list(preds.argmax(1)) == list(y[:3])
    r = requests.post(base + ":predict", json={"instances": [{"b64": b64(digit_png(x[i]))} for i in range(3)]}, timeout=10)
    assert list(np.array(r.json()["predictions"]).argmax(1)) == list(y[:3])
    r = requests.post(base + "/versions/1:predict", json={"instances": [{"pixels": {"b64": b64(digit_png(x[0]))}}]}, timeout=10)
    assert np.argmax(r.json()["predictions"][0]) == y[0]


def test_tfserving_columnar_and_multi_io(two_io_server):
    base = two_io_server + "/v1/models/two"
    r = requests.post(base + ":predict", json={"inputs": {"a": [[1, 2, 3]], "b": [[2, 2, 2]]}}, timeout=10)
    assert r.json() == {"outputs": {"output_0": [[3.0, 4.0, 5.0]], "output_1": [[2.0, 4.0, 6.0]]}}
    r = requests.post(base + ":predict", json={"instances": [{"a": [1, 2, 3], "b": [1, 1, 1]}]}, timeout=10)
    assert r.json() == {"predictions": [{"output_0": [2.0, 3.0, 4.0], "output_1": [1.0, 2.0, 3.0]}]}


@pytest.mark.parametrize("body,status,message", [
    ({"instances": [[1, 2]], "inputs": [[1]]}, 400, "exactly one of"),
    ({"instances": []}, 400, "non-empty list"),
    ({"instances": [{"a": [1, 2, 3]}, {"b": [1, 2, 3]}]}, 400, "'instances[1]' has inputs"),
    ({"instances": [{"a": [1, 2, "x"], "b": [1, 1, 1]}]}, 400, "must hold only numbers"),
])
def test_tfserving_errors(two_io_server, body, status, message):
    r = requests.post(two_io_server + "/v1/models/two:predict", json=body, timeout=10)
    assert r.status_code == status and message in r.json()["error"]
    assert requests.post(two_io_server + "/v1/models/two:classify", json={}, timeout=5).status_code == 404
    assert requests.get(two_io_server + "/v1/models/nope", timeout=5).status_code == 404


def test_oip_and_tf_serving_answer_one_version_and_name_the_model_and_version(digits_server):
    for path in ("/v2/models/digits/versions/1", "/v1/models/digits/versions/1"):
        assert requests.get(digits_server + path, timeout=5).status_code == 200
    for path in ("/v2/models/digits/versions/2", "/v2/models/digits/versions/2/ready",
                 "/v1/models/digits/versions/2", "/v1/models/digits/versions/2/metadata"):
        r = requests.get(digits_server + path, timeout=5)
        assert r.status_code == 404 and "model 'digits' has no version '2'" in r.json()["error"], path
    r = requests.get(digits_server + "/v1/models/nope/metadata", timeout=5)
    assert r.status_code == 404 and "model 'nope' is not in function 'digits'" in r.json()["error"]


def test_oip_an_input_sent_twice_is_400(digits_server):
    t = {"name": "pixels", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}
    r = requests.post(digits_server + "/v2/models/digits/infer", json={"inputs": [t, dict(t, data=[1.0] * 64)]}, timeout=10)
    assert r.status_code == 400 and "input 'pixels' (inputs[1]) is sent twice" in r.json()["error"]
