"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService` (ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer), over the same data plane
as the REST routes (`oip`): the same models, versions, names, datatypes and errors.

This module decodes and encodes protobuf messages only; framing and HTTP/2 are `h2c`'s.
Inputs come as typed `contents` or as `raw_input_contents`; outputs go as
`raw_output_contents`. A BYTES input holds encoded images (Triton's length-prefixed
serialization in raw contents, or `bytes_contents`): they go through the pre-processing.
Errors: `errors.describe_error`'s HTTP status -> a gRPC status code (`GRPC_CODE_OF_STATUS`),
a batch over serving.max_batch_size -> RESOURCE_EXHAUSTED."""
from __future__ import annotations

from dataclasses import dataclass

from typing import Mapping, Optional

import numpy as np

from mlfn_runtime.auth import Denied
from mlfn_runtime.errors import BatchTooLarge, InvalidInput, describe_error
from mlfn_runtime.oip_grpc import RPCS, SERVICE
from mlfn_runtime.tensors import NUMPY_OF_V2, V2_OF_NUMPY, buffer_array, bytes_elements, typed_array
from mlfn_runtime.version import VERSION

OK, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 0, 3, 5, 7, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 12, 13, 14, 16
GRPC_CODE_OF_STATUS = {400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: NOT_FOUND,
                       405: UNIMPLEMENTED, 413: RESOURCE_EXHAUSTED, 429: RESOURCE_EXHAUSTED, 503: UNAVAILABLE}
# what a caller must be allowed to do (mlfn_runtime.auth), as for the REST v2 routes; None: open
SCOPE_OF_METHOD = {"ServerLive": None, "ServerReady": None, "ModelReady": None, "ServerMetadata": "metadata",
                   "ModelMetadata": "metadata", "ModelInfer": "infer"}
# datatype -> the typed `contents` field that holds it (FP16 travels only as raw contents)
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


@dataclass
class GrpcReply:
    """One answered call: gRPC status code and message, the serialized response message
    (empty unless OK), the HTTP status the same error has over REST (for metrics) and the
    model it concerned."""

    code: int
    message: str
    body: bytes
    status: int
    model: str = ""
    endpoint: str = "grpc_unknown"


def call(state, path: str, request: bytes, headers: Optional[Mapping] = None) -> GrpcReply:
    """Answer one unary call to `path` (`/inference.GRPCInferenceService/<Method>`); `headers`
    (the call's metadata) carry the credentials the function's auth settings demand."""
    service, _, method = path.lstrip("/").partition("/")
    rpc = RPCS.get(method) if service == SERVICE else None
    if rpc is None:
        return GrpcReply(UNIMPLEMENTED, f"no gRPC method {path}; this function serves {SERVICE}", b"", 404)
    request_class, response_class = rpc
    handler, limited = HANDLERS[method]
    endpoint = "grpc_" + method
    model = ""
    try:
        try:
            message = request_class.FromString(request)
        except Exception:  # protobuf's DecodeError (the class differs between implementations)
            raise InvalidInput(f"the {method} request is not a valid {request_class.DESCRIPTOR.full_name} message") from None
        model = getattr(message, MODEL_FIELD[method]) if method in MODEL_FIELD else ""
        state.auth.admit(headers or {}, SCOPE_OF_METHOD.get(method, "metadata"),
                         state.auth.models(state.function, {"name": model} if model else {}, {}))
        if limited:
            with state.slots:
                response = handler(state, message, response_class)
        else:
            response = handler(state, message, response_class)
        return GrpcReply(OK, "", response.SerializeToString(), 200, model, endpoint)
    except Denied as d:  # 401/403/429: the one sentence, never the credential
        return GrpcReply(GRPC_CODE_OF_STATUS.get(d.status, PERMISSION_DENIED), d.message, b"", d.status, model,
                         endpoint)
    except Exception as e:
        status, text = describe_error(e, f"gRPC {method}")
        return GrpcReply(_code(e, status), text, b"", status, model, endpoint)


def server_live(state, req, response_class):
    return response_class(live=True)


def server_ready(state, req, response_class):
    return response_class(ready=state.ready)


def model_ready(state, req, response_class):
    if state.function is None:
        return response_class(ready=False)
    state.function.model(req.name, req.version or None)
    return response_class(ready=True)


def server_metadata(state, req, response_class):
    return response_class(name="mlfn", version=VERSION, extensions=[])


def model_metadata(state, req, response_class):
    meta = state.require_function().model(req.name, req.version or None).metadata()
    return response_class(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                          inputs=meta["inputs"], outputs=meta["outputs"])


def model_infer(state, req, response_class):
    fn = state.require_function()
    entry = fn.model(req.model_name, req.model_version or None)
    if not req.inputs:
        raise InvalidInput("the ModelInfer request needs 'inputs': at least one tensor")
    inputs = _decode_inputs(req)
    wanted = [o.name for o in req.outputs] or None
    result = fn.infer(entry.name, inputs, wanted)
    response = response_class(model_name=entry.name, model_version="1", id=req.id)
    for out_name, arr in result.items():
        arr = np.asarray(arr)
        datatype = V2_OF_NUMPY.get(arr.dtype.name)
        if datatype is None:
            arr, datatype = arr.astype(np.float32), "FP32"
        response.outputs.add(name=out_name, datatype=datatype, shape=list(arr.shape))
        response.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
    return response


def _decode_inputs(req) -> dict:
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidInput(f"'raw_input_contents' holds {len(raw)} tensors but 'inputs' declares {len(req.inputs)}; "
                           "send one raw content per input")
    inputs = {}
    for i, t in enumerate(req.inputs):
        where = f"input '{t.name}' (inputs[{i}])"
        if not t.name:
            raise InvalidInput(f"inputs[{i}] has no 'name'")
        if t.name in inputs:
            raise InvalidInput(f"{where} is sent twice; send each input tensor once")
        inputs[t.name] = _decode_input(t, raw[i] if raw else None, where)
    return inputs


def _decode_input(t, raw, where: str):
    """One InferInputTensor -> encoded images (BYTES) or an array."""
    shape = list(t.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: 'shape' {shape} must hold non-negative integers")
    if t.datatype != "BYTES" and t.datatype not in NUMPY_OF_V2:
        raise InvalidInput(f"{where}: 'datatype' {t.datatype!r} is not supported; use one of BYTES, {', '.join(NUMPY_OF_V2)}")
    count = int(np.prod(shape)) if shape else 1
    if raw is not None:
        if t.HasField("contents"):
            raise InvalidInput(f"{where}: send either 'contents' or 'raw_input_contents', not both")
        if t.datatype != "BYTES":
            return buffer_array(raw, shape, t.datatype, where)
        items = bytes_elements(raw, where)
    else:
        field = CONTENTS_FIELD.get(t.datatype)
        if field is None:
            raise InvalidInput(f"{where}: datatype {t.datatype} has no typed 'contents' field; send it in 'raw_input_contents'")
        items = list(getattr(t.contents, field))
        if t.datatype != "BYTES":
            if len(items) != count:
                raise InvalidInput(f"{where}: 'contents.{field}' has {len(items)} elements but its shape {shape} needs {count}")
            return typed_array(items, shape, t.datatype, where)
    if len(items) != count:
        raise InvalidInput(f"{where} has {len(items)} BYTES elements but its shape {shape} needs {count}")
    return items


MODEL_FIELD = {"ModelReady": "name", "ModelMetadata": "name", "ModelInfer": "model_name"}  # for metrics
# method -> (handler, counts against serving.workers)
HANDLERS = {
    "ServerLive": (server_live, False), "ServerReady": (server_ready, False), "ModelReady": (model_ready, False),
    "ServerMetadata": (server_metadata, True), "ModelMetadata": (model_metadata, True),
    "ModelInfer": (model_infer, True),
}


def error_reply(exc: Exception, path: str) -> GrpcReply:
    """The reply for a request that failed before its method ran (framing, size)."""
    status, text = describe_error(exc, f"gRPC {path}")
    return GrpcReply(_code(exc, status), text, b"", status, "", "grpc_" + path.rsplit("/", 1)[-1])


def _code(exc: Exception, status: int) -> int:
    return RESOURCE_EXHAUSTED if isinstance(exc, BatchTooLarge) else GRPC_CODE_OF_STATUS.get(status, INTERNAL)
