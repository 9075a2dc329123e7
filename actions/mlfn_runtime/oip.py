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
model's own (no post-processing).
"""
from __future__ import annotations

import json
import struct

import numpy as np

from mlfn_runtime import __version__
from mlfn_runtime.errors import InvalidInput, NotFound, NotReady

NP_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
V2_OF = {np.dtype(v).name: k for k, v in NP_TYPES.items()}


def route(app, path: str):
    """(endpoint label, handler, allowed methods) for a /v2 path."""
    parts = path.split("/")[2:]  # after "", "v2"
    if not parts:
        return "v2_server", lambda req: _server_meta(app), "GET"
    if parts == ["health", "live"]:
        return "v2_live", lambda req: _resp(200, {"live": True}), ("GET", "HEAD")
    if parts == ["health", "ready"]:
        return "v2_ready", lambda req: _ready(app), ("GET", "HEAD")
    if len(parts) >= 2 and parts[0] == "models":
        name, rest = parts[1], parts[2:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if rest == []:
            return "v2_metadata", lambda req: _metadata(app, name, version), "GET"
        if rest == ["ready"]:
            return "v2_model_ready", lambda req: _model_ready(app, name, version), ("GET", "HEAD")
        if rest == ["infer"]:
            return "v2_infer", lambda req: infer(app, req, name, version), "POST"
    return "v2_unknown", _unknown, ("GET", "POST")


def _unknown(req):
    raise NotFound(f"no Open Inference Protocol route {req.path}")


def _resp(status, body, headers=None, model=""):
    from mlfn_runtime.server import Response

    return Response(status, body, headers, model)


def _server_meta(app):
    return _resp(200, {"name": "mlfn", "version": __version__, "extensions": ["binary_tensor_data"]})


def _ready(app):
    ok = app.ready and not app.draining
    return _resp(200 if ok else 503, {"ready": ok})


def _metadata(app, name, version):
    return _resp(200, app.model_entry(name, version).metadata(), model=name)


def _model_ready(app, name, version):
    try:
        app.model_entry(name, version)
    except NotReady:
        return _resp(503, {"name": name, "ready": False}, model=name)
    return _resp(200, {"name": name, "ready": True}, model=name)


def infer(app, req, name, version):
    fn = app.require_function()
    entry = app.model_entry(name, version)
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
    try:
        doc = json.loads(body) if body else None
    except ValueError as e:
        raise InvalidInput(f"the request body is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput("the infer request needs 'inputs': a non-empty list of tensors")
    inputs = {}
    offset = 0
    for i, t in enumerate(doc["inputs"]):
        arr, offset = _decode_input(t, i, binary, offset)
        if t["name"] in inputs:
            raise InvalidInput(f"input '{t['name']}' (inputs[{i}]) is sent twice; send each input tensor once")
        inputs[t["name"]] = arr
    if offset != len(binary):
        raise InvalidInput(f"the binary tensor data holds {len(binary) - offset} bytes more than the inputs declare")
    requested = doc.get("outputs")
    binary_all = bool((doc.get("parameters") or {}).get("binary_data_output", False))
    wanted = None
    binary_out = {}
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
            raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects")
        wanted = [o["name"] for o in requested]
        binary_out = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", binary_all)) for o in requested}
    result = fn.infer(entry.name, inputs, wanted)
    outputs, chunks = [], []
    for out_name, arr in result.items():
        arr = np.asarray(arr)
        datatype = V2_OF.get(arr.dtype.name)
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
    resp = {"model_name": entry.name, "model_version": "1", "outputs": outputs}
    if "id" in doc:
        resp["id"] = doc["id"]
    if chunks:
        head = json.dumps(resp, separators=(",", ":")).encode()
        return _resp(200, head + b"".join(chunks),
                     {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
                     model=entry.name)
    return _resp(200, resp, model=entry.name)


def _decode_input(t, i: int, binary: bytes, offset: int):
    where = f"inputs[{i}]"
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise InvalidInput(f"{where} must be an object with 'name', 'shape', 'datatype' and 'data'")
    where = f"input '{t['name']}' (inputs[{i}])"
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers")
    datatype = t.get("datatype")
    count = int(np.prod(shape)) if shape else 1
    size = (t.get("parameters") or {}).get("binary_data_size")
    if datatype == "BYTES":
        if size is not None:
            chunk, offset = _take(binary, offset, size, where)
            items, pos = [], 0
            while pos < len(chunk):
                if pos + 4 > len(chunk):
                    raise InvalidInput(f"{where} BYTES binary data is truncated")
                (n,) = struct.unpack_from("<I", chunk, pos)
                items.append(bytes(chunk[pos + 4:pos + 4 + n]))
                pos += 4 + n
        else:
            items = _flatten(t.get("data"), where)
            if not all(isinstance(x, str) for x in items):
                raise InvalidInput(f"{where}: 'data' of datatype BYTES must hold strings (base64-encoded images)")
        if len(items) != count:
            raise InvalidInput(f"{where} has {len(items)} elements but its shape {shape} needs {count}")
        return items, offset
    dtype = NP_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"{where}: 'datatype' {datatype!r} is not supported; use one of BYTES, {', '.join(NP_TYPES)}")
    if size is not None:
        chunk, offset = _take(binary, offset, size, where)
        if len(chunk) != count * np.dtype(dtype).itemsize:
            raise InvalidInput(f"{where} has {len(chunk)} bytes of binary data but shape {shape} of {datatype} needs "
                               f"{count * np.dtype(dtype).itemsize}")
        arr = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    else:
        data = t.get("data")
        if data is None:
            raise InvalidInput(f"{where}: 'data' is missing")
        flat = _flatten(data, where)
        if any(isinstance(x, (str, dict, type(None))) for x in flat):
            raise InvalidInput(f"{where}: 'data' must hold only numbers for datatype {datatype}")
        if len(flat) != count:
            raise InvalidInput(f"{where} has {len(flat)} elements but its shape {shape} needs {count}")
        try:
            arr = np.array(flat, dtype=np.float64 if dtype().dtype.kind == "f" else None)
            if dtype().dtype.kind in "iu" and arr.dtype.kind == "f":
                raise InvalidInput(f"{where}: 'data' holds fractions but its datatype is {datatype}")
            info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
            if info is not None and arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise InvalidInput(f"{where}: 'data' holds values out of range for {datatype}")
            arr = arr.astype(dtype).reshape(shape)
        except InvalidInput:
            raise
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"{where}: 'data' cannot be read as {datatype}: {e}") from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{where} holds NaN or infinite values")
    return arr, offset


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
