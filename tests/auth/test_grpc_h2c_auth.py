"""Issue 14 on the protocols of issue 15: gRPC calls and REST over h2c are checked like
HTTP/1.1 requests (same scopes, same keys), and answer with gRPC's own status codes."""
from __future__ import annotations

import json
import shutil
import subprocess

import grpc
import numpy as np
import pytest

from tests.auth.test_guard_http import auth_server  # noqa: F401  (fixture)


@pytest.fixture()
def grpc_auth_server(auth_server):
    """The auth-enabled server of test_guard_http: its URL."""
    return auth_server[0]


def _infer_request(meta, x):
    from tests.grpc.grpc_helpers import message

    name, dims = meta.inputs[0].name, [int(d) for d in meta.inputs[0].shape[1:]]
    rows = x[:2].reshape([2] + dims).astype(np.float32)
    request = message("ModelInferRequest", model_name="digits",
                      inputs=[{"name": name, "datatype": "FP32", "shape": [2] + dims}])
    request.raw_input_contents.append(rows.tobytes())
    return request


def test_grpc_calls_need_the_scopes_rest_needs(grpc_auth_server, material, rt_models):
    from tests.grpc.grpc_helpers import call, message

    target = grpc_auth_server.removeprefix("http://")
    x = np.load(rt_models / "digits.npz")["x"]
    meta = call(target, "ModelMetadata", message("ModelMetadataRequest", name="digits"),
                metadata=(("x-api-key", material.keys["metadata"]),))
    assert meta.name == "digits"
    request = _infer_request(meta, x)
    # health stays open
    assert call(target, "ServerReady", message("ServerReadyRequest")).ready is True
    cases = [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-api-key", material.keys["predict"] + "x"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-api-key", material.keys["predict"]),), grpc.StatusCode.PERMISSION_DENIED),  # predict, not infer
        ((("x-api-key", material.keys["other_model"]),), grpc.StatusCode.PERMISSION_DENIED),
    ]
    for metadata, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(target, "ModelInfer", request, metadata=metadata)
        assert err.value.code() == code
        assert material.keys["predict"] not in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        call(target, "ModelMetadata", message("ModelMetadataRequest", name="digits"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = call(target, "ModelInfer", request, metadata=(("authorization", "Bearer " + material.keys["all"]),))
    assert len(reply.raw_output_contents) == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_rest_over_h2c_is_checked_like_http1(grpc_auth_server, material):
    def curl(*args):
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", *args],
                           capture_output=True, text=True, timeout=30)
        body, _, status = r.stdout.rpartition("\n")
        return status, body

    url = grpc_auth_server + "/v2/models/digits"
    assert curl(url)[0] == "2 401"
    assert curl("-H", "X-API-Key: " + material.keys["predict"], url)[0] == "2 403"
    status, body = curl("-H", "X-API-Key: " + material.keys["metadata"], url)
    assert status == "2 200" and json.loads(body)["name"] == "digits"
    assert curl(grpc_auth_server + "/v2/health/ready")[0] == "2 200"
