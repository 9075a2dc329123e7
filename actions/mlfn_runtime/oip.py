"""Open Inference Protocol v2 REST (KServe v2 / Triton), so standard clients work unchanged.

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/{name}[/versions/1]        model metadata (datatypes, -1 = variable dim)
    GET  /v2/models/{name}[/versions/1]/ready
    POST /v2/models/{name}[/versions/1]/infer  tensors in, model tensors out

`infer` takes `data` flat or nested, any datatype the model takes (quantized tensors are
FP32 to clients), `outputs` selection, and Triton's binary tensor extension
(`Inference-Header-Content-Length`, `binary_data_size`, `binary_data_output`) which
`tritonclient.http` uses by default. A BYTES input holds encoded images (base64 text in
JSON, raw bytes in binary): they go through the model's pre-processing. Outputs are the
model's own (no post-processing). This module decodes and encodes only: the values are
checked by the data plane (`Function.infer`, `tensors`). Routes: `mlfn_runtime.routes`.
"""
from __future__ import annotations

import json

import numpy as np

from mlfn_runtime.version import VERSION
from mlfn_runtime.errors import InvalidInput, NotFound
from mlfn_runtime.http_messages import Response, parse_json
from mlfn_runtime.tensors import NUMPY_OF_V2, V2_OF_NUMPY, buffer_array, bytes_elements, typed_array


def server_metadata(state, req, params) -> Response:
    return Response(200, {"name": "mlfn", "version": VERSION, "extensions": ["binary_tensor_data"]})


def live(state, req, params) -> Response:
    return Response(200, {"live": True})


def ready(state, req, params) -> Response:
    return Response(200 if state.ready else 503, {"ready": state.ready})


def model_metadata(state, req, params) -> Response:
    entry = state.require_function().model(params["name"], params.get("version"))
    return Response(200, entry.metadata(), model=entry.name)


def model_ready(state, req, params) -> Response:
    name = params["name"]
    if state.function is None:
        return Response(503, {"name": name, "ready": False}, model=name)
    state.function.model(name, params.get("version"))
    return Response(200, {"name": name, "ready": True}, model=name)


def unknown(state, req, params) -> Response:
    raise NotFound(f"no Open Inference Protocol route {req.path}")


def infer(state, req, params) -> Response:
    fn = state.require_function()
    entry = fn.model(params["name"], params.get("version"))
    doc, binary = _split_body(req)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput("the infer request needs 'inputs': a non-empty list of tensors")
    inputs = _decode_inputs(doc["inputs"], binary)
    wanted, binary_out, binary_all = _requested_outputs(doc)
    result = fn.infer(entry.name, inputs, wanted)
    return _encode_result(entry.name, doc, result, binary_out, binary_all)


def _split_body(req):
    """(JSON header document, binary tensor data) of an infer request."""
    body = req.body
    header_len = req.headers.get("Inference-Header-Content-Length")
    binary = b""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length is not a number") from None
        if n < 0 or n > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {n} is larger than the body ({len(body)} bytes)")
        body, binary = body[:n], body[n:]
    return (parse_json(body, "the request body") if body else None), binary


def _decode_inputs(tensors: list, binary: bytes) -> dict:
    inputs = {}
    offset = 0
    for i, t in enumerate(tensors):
        arr, offset = _decode_input(t, i, binary, offset)
        if t["name"] in inputs:
            raise InvalidInput(f"input '{t['name']}' (inputs[{i}]) is sent twice; send each input tensor once")
        inputs[t["name"]] = arr
    if offset != len(binary):
        raise InvalidInput(f"the binary tensor data holds {len(binary) - offset} bytes more than the inputs declare")
    return inputs


def _requested_outputs(doc: dict):
    """(output names or None for all, {name: binary?}, binary for all?)"""
    requested = doc.get("outputs")
    binary_all = bool(_parameters(doc, "the request").get("binary_data_output", False))
    if requested is None:
        return None, {}, binary_all
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
        raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects")
    binary_out = {o["name"]: bool(_parameters(o, f"output '{o['name']}'").get("binary_data", binary_all)) for o in requested}
    return [o["name"] for o in requested], binary_out, binary_all


def _encode_result(model: str, doc: dict, result: dict, binary_out: dict, binary_all: bool) -> Response:
    outputs, chunks = [], []
    for out_name, arr in result.items():
        arr = np.asarray(arr)
        datatype = V2_OF_NUMPY.get(arr.dtype.name)
        if datatype is None:
            arr, datatype = arr.astype(np.float32), "FP32"
        o = {"name": out_name, "datatype": datatype, "shape": list(arr.shape)}
        if binary_out.get(out_name, binary_all):
            raw = np.ascontiguousarray(arr).tobytes()
            o["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            o["data"] = arr.reshape(-1).tolist()
        outputs.append(o)
    resp = {"model_name": model, "model_version": "1", "outputs": outputs}
    if "id" in doc:
        resp["id"] = doc["id"]
    if not chunks:
        return Response(200, resp, model=model)
    head = json.dumps(resp, separators=(",", ":")).encode()
    return Response(200, head + b"".join(chunks),
                    {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
                    model=model)


def _decode_input(t, i: int, binary: bytes, offset: int):
    """One request tensor -> (encoded images or an array, offset after its binary data)."""
    where = f"inputs[{i}]"
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise InvalidInput(f"{where} must be an object with 'name', 'shape', 'datatype' and 'data'")
    where = f"input '{t['name']}' (inputs[{i}])"
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers")
    datatype = t.get("datatype")
    count = int(np.prod(shape)) if shape else 1
    size = _parameters(t, where).get("binary_data_size")
    if datatype == "BYTES":
        return _decode_bytes(t, where, shape, count, size, binary, offset)
    if not isinstance(datatype, str) or datatype not in NUMPY_OF_V2:
        raise InvalidInput(f"{where}: 'datatype' {datatype!r} is not supported; use one of BYTES, {', '.join(NUMPY_OF_V2)}")
    if size is not None:
        chunk, offset = _take(binary, offset, size, where)
        return buffer_array(chunk, shape, datatype, where), offset
    data = t.get("data")
    if data is None:
        raise InvalidInput(f"{where}: 'data' is missing")
    flat = _flatten(data, where)
    if len(flat) != count:
        raise InvalidInput(f"{where} has {len(flat)} elements but its shape {shape} needs {count}")
    return typed_array(flat, shape, datatype, where), offset


def _decode_bytes(t, where, shape, count, size, binary, offset):
    """BYTES: 4-byte little-endian length + bytes per element (binary), or strings (JSON)."""
    if size is not None:
        chunk, offset = _take(binary, offset, size, where)
        items = bytes_elements(chunk, where)
    else:
        items = _flatten(t.get("data"), where)
        if not all(isinstance(x, str) for x in items):
            raise InvalidInput(f"{where}: 'data' of datatype BYTES must hold strings (base64-encoded images)")
    if len(items) != count:
        raise InvalidInput(f"{where} has {len(items)} elements but its shape {shape} needs {count}")
    return items, offset


def _parameters(obj: dict, where: str) -> dict:
    """An object's optional `parameters`: a JSON object, or a 400 naming `where`."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return params


def _take(binary: bytes, offset: int, size, where: str):
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise InvalidInput(f"{where} declares binary_data_size {size!r} but only {len(binary) - offset} bytes are left")
    return memoryview(binary)[offset:offset + size], offset + size


def _flatten(data, where: str) -> list:
    """Flat or nested `data` -> one row-major list."""
    if not isinstance(data, list):
        return [data]
    out: list = []

    def walk(x, depth):
        if depth > 32:
            raise InvalidInput(f"{where}: 'data' is nested too deeply")
        for v in x:
            if isinstance(v, list):
                walk(v, depth + 1)
            else:
                out.append(v)

    walk(data, 0)
    return out
