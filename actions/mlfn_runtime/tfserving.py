"""TensorFlow Serving REST API, so TF Serving clients work unchanged.

    GET  /v1/models/{name}[/versions/1]              model status
    GET  /v1/models/{name}[/versions/1]/metadata     signature_def with dtypes and shapes
    POST /v1/models/{name}[/versions/1]:predict      {"instances": [...]} (row) or {"inputs": ...} (columnar)

Values may be `{"b64": "..."}` (encoded images: they go through the model's
pre-processing); numbers are model tensors. Answers are the model's outputs:
`{"predictions": [...]}` for row requests, `{"outputs": ...}` for columnar ones;
errors `{"error": "..."}`.
"""
from __future__ import annotations


import numpy as np

from mlfn_runtime.errors import InvalidInput, NotFound

TF_DTYPES = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "float64": "DT_DOUBLE", "int8": "DT_INT8", "uint8": "DT_UINT8",
    "int16": "DT_INT16", "uint16": "DT_UINT16", "int32": "DT_INT32", "int64": "DT_INT64", "bool": "DT_BOOL",
}


def route(app, path: str):
    rest = path[len("/v1/models/"):]
    verb = None
    if ":" in rest:
        rest, verb = rest.split(":", 1)
    parts = rest.split("/")
    name, parts = parts[0], parts[1:]
    version = None
    if len(parts) >= 2 and parts[0] == "versions":
        version, parts = parts[1], parts[2:]
    if verb is None and parts == []:
        return "v1_status", lambda req: _status(app, name, version), "GET"
    if verb is None and parts == ["metadata"]:
        return "v1_metadata", lambda req: _metadata(app, name, version), "GET"
    if verb == "predict" and parts == []:
        return "v1_predict", lambda req: predict(app, req, name, version), "POST"
    return "v1_unknown", _unknown, ("GET", "POST")


def _unknown(req):
    raise NotFound(f"no TensorFlow Serving route {req.path} (this function supports :predict, not :classify or :regress)")


def _resp(status, body, model=""):
    from mlfn_runtime.server import Response

    return Response(status, body, None, model)


def _status(app, name, version):
    app.model_entry(name, version)
    return _resp(200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}, name)


def _tensor_info(t) -> dict:
    return {
        "dtype": TF_DTYPES.get(t.client_dtype.name, "DT_INVALID"),
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in t.shape], "unknown_rank": False},
        "name": t.name,
    }


def _metadata(app, name, version):
    entry = app.model_entry(name, version)
    r = entry.runner
    sig = {
        "inputs": {t.name: _tensor_info(t) for t in r.inputs},
        "outputs": {t.name: _tensor_info(t) for t in r.outputs},
        "method_name": "tensorflow/serving/predict",
    }
    return _resp(200, {
        "model_spec": {"name": entry.name, "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
    }, name)


def _is_b64(v) -> bool:
    return isinstance(v, dict) and set(v) == {"b64"}


def _column(values: list, label: str):
    """A list of per-instance values -> encoded images (list) or a stacked array."""
    if all(_is_b64(v) for v in values):
        return values
    if any(_is_b64(v) for v in values):
        raise InvalidInput(f"'{label}' mixes {{\"b64\"}} values with numbers")
    from mlfn_runtime.function import to_numeric

    return to_numeric(values, label, batch=True)


def predict(app, req, name, version):
    fn = app.require_function()
    entry = app.model_entry(name, version)
    doc = req.json()
    if not isinstance(doc, dict):
        raise InvalidInput("the request must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in doc) == ("inputs" in doc):
        raise InvalidInput("send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    input_names = entry.runner.input_names
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("'instances' must be a non-empty list")
        named = all(isinstance(r, dict) and not _is_b64(r) for r in rows)
        if named:
            keys = set(rows[0])
            for i, r in enumerate(rows):
                if set(r) != keys:
                    raise InvalidInput(f"'instances[{i}]' has inputs {sorted(r)} but 'instances[0]' has {sorted(keys)}")
            inputs = {k: _column([r[k] for r in rows], f"instances[*].{k}") for k in keys}
        else:
            inputs = {input_names[0] if len(input_names) == 1 else "instances": _column(rows, "instances")}
        result = fn.infer(entry.name, inputs)
        n = len(rows)
        if len(result) == 1:
            (arr,) = result.values()
            preds = [np.asarray(arr[i]).tolist() for i in range(n)]
        else:
            preds = [{k: np.asarray(v[i]).tolist() for k, v in result.items()} for i in range(n)]
        return _resp(200, {"predictions": preds}, entry.name)
    cols = doc["inputs"]
    if isinstance(cols, dict) and not _is_b64(cols):
        inputs = {k: (_column(v, f"inputs.{k}") if isinstance(v, list) else _column([v], f"inputs.{k}"))
                  for k, v in cols.items()}
    else:
        value = cols if isinstance(cols, list) else [cols]
        inputs = {input_names[0] if len(input_names) == 1 else "inputs": _column(value, "inputs")}
    result = fn.infer(entry.name, inputs)
    if len(result) == 1:
        (arr,) = result.values()
        return _resp(200, {"outputs": np.asarray(arr).tolist()}, entry.name)
    return _resp(200, {"outputs": {k: np.asarray(v).tolist() for k, v in result.items()}}, entry.name)
