"""Shared checks of the gRPC tests: one tritonclient.grpc session covering health, metadata,
infer (raw and typed contents, images as BYTES, batch) and every error case, run against
the in-process server and against the real image."""
from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.conftest import digit_png

SERVICE = "/inference.GRPCInferenceService/"


def call(target: str, method: str, request, timeout: float = 20, **kwargs):
    """One unary call with the project's own message classes (typed contents, raw bytes)."""
    import grpc

    from mlfn_runtime.oip_grpc import RPCS

    response_class = RPCS[method][1]
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_class.FromString)
        return stub(request, timeout=timeout, **kwargs)


def message(type_name: str, **fields):
    from mlfn_runtime.oip_grpc import MESSAGES

    return MESSAGES[type_name](**fields)


def model_io(target: str) -> tuple:
    """(input name, input dims without batch, input datatype, output name) of model 'digits'."""
    import tritonclient.grpc as tg

    meta = tg.InferenceServerClient(target).get_model_metadata("digits", as_json=True)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    return inp["name"], [int(d) for d in inp["shape"][1:]], inp["datatype"], out["name"]


def check_health_metadata_infer(target: str, x: np.ndarray, y: np.ndarray) -> None:
    """`x`: samples in 0..1 (8x8 digits), `y`: their labels."""
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert client.get_server_metadata(as_json=True)["name"] == "mlfn"
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["versions"] == ["1"] and meta["platform"] == "tflite" and meta["inputs"][0]["shape"][0] == "-1"
    name, dims, datatype, out_name = model_io(target)
    batch = x[:32].reshape([32] + dims).astype(np.float32)
    inp = tg.InferInput(name, list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    res = client.infer("digits", [inp], outputs=[tg.InferRequestedOutput(out_name)], request_id="r-1")
    logits = res.as_numpy(out_name)
    assert logits.shape == (32, 10) and res.get_response().id == "r-1"
    assert (logits.argmax(1) == y[:32]).mean() >= 0.8
    # the same rows as typed contents (fp32_contents) give the same logits
    typed = message("ModelInferRequest", model_name="digits", inputs=[{
        "name": name, "datatype": "FP32", "shape": [3] + dims,
        "contents": {"fp32_contents": batch[:3].reshape(-1).tolist()}}])
    out = call(target, "ModelInfer", typed)
    assert out.outputs[0].name == out_name and list(out.outputs[0].shape) == [3, 10]
    assert np.allclose(np.frombuffer(out.raw_output_contents[0], np.float32).reshape(3, 10), logits[:3], atol=1e-5)
    # encoded images as BYTES go through the pre-processing
    images = np.array([digit_png(x[i].reshape(8, 8)) for i in range(3)], dtype=np.object_)
    inp = tg.InferInput(name, [3], "BYTES")
    inp.set_data_from_numpy(images)
    assert list(client.infer("digits", [inp]).as_numpy(out_name).argmax(1)) == list(y[:3])
    typed = message("ModelInferRequest", model_name="digits", inputs=[{
        "name": name, "datatype": "BYTES", "shape": [1], "contents": {"bytes_contents": [bytes(images[0])]}}])
    assert np.frombuffer(call(target, "ModelInfer", typed).raw_output_contents[0], np.float32).argmax() == y[0]


def infer_error(client, model="digits", version="", inputs=None, outputs=None):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs, model_version=version, outputs=outputs)
    return info.value.status(), info.value.message()


def check_errors(target: str, max_payload: int) -> None:
    """Every error is a status code with a message naming the field; the server keeps serving."""
    import grpc
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    client = tg.InferenceServerClient(target)
    name, dims, _, _ = model_io(target)

    def inp(name, shape, datatype, arr):
        i = tg.InferInput(name, shape, datatype)
        i.set_data_from_numpy(arr)
        return i

    one = [1] + dims
    ok = inp(name, one, "FP32", np.zeros(one, np.float32))
    status, text = infer_error(client, model="nope", inputs=[ok])
    assert status == "StatusCode.NOT_FOUND" and "model 'nope' is not in function 'digits'" in text
    status, text = infer_error(client, version="7", inputs=[ok])
    assert status == "StatusCode.NOT_FOUND" and "no version '7'" in text
    with pytest.raises(InferenceServerException, match="NOT_FOUND|not in function"):
        client.get_model_metadata("nope")
    status, text = infer_error(client, inputs=[inp(name, [1, 3], "FP32", np.zeros((1, 3), np.float32))])
    assert status == "StatusCode.INVALID_ARGUMENT" and f"has shape [3] but model 'digits' takes {dims}" in text
    status, text = infer_error(client, inputs=[inp("no_such_input", one, "FP32", np.zeros(one, np.float32))])
    assert status == "StatusCode.INVALID_ARGUMENT" and "has no input 'no_such_input'" in text
    status, text = infer_error(client, inputs=[ok], outputs=[tg.InferRequestedOutput("logits")])
    assert status == "StatusCode.INVALID_ARGUMENT" and "has no output 'logits'" in text
    status, text = infer_error(client, inputs=[inp(name, [33] + dims, "FP32", np.zeros([33] + dims, np.float32))])
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "serving.max_batch_size" in text
    images = np.array([b"not an image"], dtype=np.object_)
    status, text = infer_error(client, inputs=[inp(name, [1], "BYTES", images)])
    assert status == "StatusCode.INVALID_ARGUMENT" and f"{name}[0]" in text
    big = np.zeros((1, max_payload // 4 + 16), np.float32)
    status, text = infer_error(client, inputs=[inp(name, list(big.shape), "FP32", big)])
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "serving.max_payload_bytes" in text
    for request, expected in (
        (message("ModelInferRequest", model_name="digits"), "needs 'inputs'"),
        (message("ModelInferRequest", model_name="digits", inputs=[{"name": name, "datatype": "FP32", "shape": one}],
                 raw_input_contents=[b"\0" * 256, b"\0"]), "'raw_input_contents' holds 2 tensors but 'inputs' declares 1"),
        (message("ModelInferRequest", model_name="digits", inputs=[{"name": name, "datatype": "FP32", "shape": one}],
                 raw_input_contents=[b"\0" * 10]), f"input '{name}' (inputs[0]) has 10 bytes"),
        (message("ModelInferRequest", model_name="digits", inputs=[{"name": name, "datatype": "FP32", "shape": one,
                 "contents": {"fp32_contents": [1.0]}}]), "'contents.fp32_contents' has 1 elements but its shape"),
        (message("ModelInferRequest", model_name="digits", inputs=[{"name": name, "datatype": "FP8", "shape": [1]}]),
         "'datatype' 'FP8' is not supported"),
        (message("ModelInferRequest", model_name="digits", inputs=[{"name": name, "datatype": "FP32", "shape": one,
                 "contents": {"fp32_contents": [float("nan")] * 64}}]), "NaN"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(target, "ModelInfer", request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert expected in info.value.details()
    zipped = call(target, "ModelInfer", message("ModelInferRequest", model_name="digits", inputs=[{
        "name": name, "datatype": "FP32", "shape": one, "contents": {"fp32_contents": [0.0] * 64}}]),
        compression=grpc.Compression.Gzip)
    assert list(zipped.outputs[0].shape) == [1, 10]
    assert client.is_server_live() and client.is_model_ready("digits")  # still serving
