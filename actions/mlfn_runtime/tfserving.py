"""TensorFlow Serving REST API, so TF Serving clients work unchanged.

    GET  /v1/models/{name}[/versions/1]              model status
    GET  /v1/models/{name}[/versions/1]/metadata     signature_def with dtypes and shapes
    POST /v1/models/{name}[/versions/1]:predict      {"instances": [...]} (row) or {"inputs": ...} (columnar)

Values may be `{"b64": "..."}` (encoded images: they go through the model's
pre-processing); numbers are model tensors. Answers are the model's outputs:
`{"predictions": [...]}` for row requests, `{"outputs": ...}` for columnar ones;
errors `{"error": "..."}`. This module decodes and encodes only: the values are checked
by the data plane (`Function.infer`, `tensors`). Routes: `mlfn_runtime.routes`.
"""
from __future__ import annotations

import numpy as np

from mlfn_runtime.errors import InvalidInput, NotFound
from mlfn_runtime.http_messages import Response
from mlfn_runtime.tensors import TF_OF_NUMPY, is_b64_object, to_numeric


def status(state, req, params) -> Response:
    entry = state.require_function().model(params["name"], params.get("version"))
    return Response(200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}, model=entry.name)


def metadata(state, req, params) -> Response:
    entry = state.require_function().model(params["name"], params.get("version"))
    r = entry.runner
    sig = {
        "inputs": {t.name: _tensor_info(t) for t in r.inputs},
        "outputs": {t.name: _tensor_info(t) for t in r.outputs},
        "method_name": "tensorflow/serving/predict",
    }
    return Response(200, {
        "model_spec": {"name": entry.name, "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
    }, model=entry.name)


def unknown(state, req, params) -> Response:
    raise NotFound(f"no TensorFlow Serving route {req.path} (this function supports :predict, not :classify or :regress)")


def predict(state, req, params) -> Response:
    fn = state.require_function()
    entry = fn.model(params["name"], params.get("version"))
    doc = req.json()
    if not isinstance(doc, dict):
        raise InvalidInput("the request must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in doc) == ("inputs" in doc):
        raise InvalidInput("send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    input_names = entry.runner.input_names
    if "instances" in doc:
        rows = doc["instances"]
        result = fn.infer(entry.name, _row_inputs(rows, input_names))
        if len(result) == 1:
            (arr,) = result.values()
            preds = [np.asarray(arr[i]).tolist() for i in range(len(rows))]
        else:
            preds = [{k: np.asarray(v[i]).tolist() for k, v in result.items()} for i in range(len(rows))]
        return Response(200, {"predictions": preds}, model=entry.name)
    result = fn.infer(entry.name, _columnar_inputs(doc["inputs"], input_names))
    if len(result) == 1:
        (arr,) = result.values()
        return Response(200, {"outputs": np.asarray(arr).tolist()}, model=entry.name)
    return Response(200, {"outputs": {k: np.asarray(v).tolist() for k, v in result.items()}}, model=entry.name)


def _row_inputs(rows, input_names: list) -> dict:
    """`instances`: one value per instance, or {input name: value} per instance."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("'instances' must be a non-empty list")
    if all(isinstance(r, dict) and not is_b64_object(r) for r in rows):
        keys = set(rows[0])
        for i, r in enumerate(rows):
            if set(r) != keys:
                raise InvalidInput(f"'instances[{i}]' has inputs {sorted(r)} but 'instances[0]' has {sorted(keys)}")
        return {k: _column([r[k] for r in rows], f"instances[*].{k}") for k in keys}
    return {input_names[0] if len(input_names) == 1 else "instances": _column(rows, "instances")}


def _columnar_inputs(cols, input_names: list) -> dict:
    """`inputs`: a tensor (batch first), or {input name: tensor}."""
    if isinstance(cols, dict) and not is_b64_object(cols):
        return {k: _column(v if isinstance(v, list) else [v], f"inputs.{k}") for k, v in cols.items()}
    value = cols if isinstance(cols, list) else [cols]
    return {input_names[0] if len(input_names) == 1 else "inputs": _column(value, "inputs")}


def _column(values: list, label: str):
    """Per-instance values -> encoded images (all `{"b64"}`: a list) or one stacked array."""
    b64 = [is_b64_object(v) for v in values]
    if all(b64):
        return values
    if any(b64):
        raise InvalidInput(f"'{label}' mixes {{\"b64\"}} values with numbers")
    return to_numeric(values, label, batch=True)


def _tensor_info(t) -> dict:
    return {
        "dtype": TF_OF_NUMPY.get(t.client_dtype.name, "DT_INVALID"),
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in t.shape], "unknown_rank": False},
        "name": t.name,
    }
