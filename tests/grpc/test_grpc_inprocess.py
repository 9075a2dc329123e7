"""inference.GRPCInferenceService and REST over h2c, on the in-process server's one port."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from tests.runtime.conftest import running

from .grpc_helpers import call, check_errors, check_health_metadata_infer, message


def test_health_metadata_infer_raw_typed_bytes_and_batch(server, digits):
    x, y = digits
    check_health_metadata_infer(server[0], x, y)


def test_every_error_is_a_status_code_naming_the_field(server):
    check_errors(server[0], server[1].state.serving.max_payload_bytes)


def test_tritonclient_http_on_the_same_port(server, digits):
    import tritonclient.http as httpclient

    x, y = digits
    client = httpclient.InferenceServerClient(server[0])
    inp = httpclient.InferInput("pixels", [2, 8, 8, 1], "FP32")
    inp.set_data_from_numpy(x[:2, :, :, None].astype(np.float32))
    assert client.infer("digits", [inp]).as_numpy("output_0").shape == (2, 10)


def test_no_model_is_unavailable_and_unknown_methods_unimplemented():
    import grpc

    with running(None) as (url, srv):
        target = url.removeprefix("http://")
        assert call(target, "ServerLive", message("ServerLiveRequest")).live is True
        assert call(target, "ServerReady", message("ServerReadyRequest")).ready is False
        assert call(target, "ModelReady", message("ModelReadyRequest", name="digits")).ready is False
        with pytest.raises(grpc.RpcError) as info:
            call(target, "ModelInfer", message("ModelInferRequest", model_name="digits"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "no model" in info.value.details()
        with grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/inference.GRPCInferenceService/Nope")(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metrics_count_grpc_calls(server):
    import requests

    call(server[0], "ModelReady", message("ModelReadyRequest", name="digits"))
    text = requests.get(f"http://{server[0]}/metrics", timeout=10).text
    assert 'mlfn_requests_total{model="digits",endpoint="grpc_ModelReady",status="200"}' in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_rest_routes_over_h2c_prior_knowledge_with_curl(server, digits, tmp_path):
    x, _ = digits
    base = f"http://{server[0]}"

    def curl(*args):
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", *args],
                           capture_output=True, text=True, timeout=30)
        body, _, status = r.stdout.rpartition("\n")
        return status, body

    assert curl(base + "/v2/health/ready") == ("2 200", '{"ready":true}')
    status, body = curl(base + "/v2/models/digits")
    assert status == "2 200" and json.loads(body)["inputs"][0]["name"] == "pixels"
    doc = {"inputs": [{"name": "pixels", "shape": [1, 8, 8, 1], "datatype": "FP32",
                       "data": x[0].reshape(-1).astype(float).tolist()}]}
    status, body = curl("-H", "Content-Type: application/json", "--data-binary", json.dumps(doc),
                        base + "/v2/models/digits/infer")
    assert status == "2 200" and json.loads(body)["outputs"][0]["shape"] == [1, 10]
    status, body = curl(base + "/v2/models/nope")
    assert status == "2 404" and "model 'nope' is not in" in json.loads(body)["error"]
    (tmp_path / "big").write_bytes(b"x" * (1048576 + 10))
    status, body = curl("-H", "Content-Type: application/json", "--data-binary", f"@{tmp_path / 'big'}",
                        base + "/v2/models/digits/infer")
    assert status == "2 413" and "serving.max_payload_bytes" in json.loads(body)["error"]
    status, body = curl(base + "/metrics")
    assert status == "2 200" and 'endpoint="v2_infer",status="200"' in body


def test_the_in_flight_limit_holds_model_infer_but_not_health(server):
    import grpc

    target, srv = server
    slots = srv.state.serving.workers
    for _ in range(slots):
        srv.state.slots.acquire()  # every worker busy
    try:
        with pytest.raises(grpc.RpcError) as info:
            call(target, "ModelMetadata", message("ModelMetadataRequest", name="digits"), timeout=1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert call(target, "ServerLive", message("ServerLiveRequest")).live is True  # probes are not limited
    finally:
        for _ in range(slots):
            srv.state.slots.release()
    assert call(target, "ModelMetadata", message("ModelMetadataRequest", name="digits")).name == "digits"
