"""`mlfn invoke URL --protocol grpc`: the request the REST v2 invoke sends, as an Open
Inference Protocol `ModelInfer` call (images as BYTES, tensors as raw contents), over gRPC
to the function's one port (`mlfn run`, or Knative when serving.grpc names the port h2c;
OpenWhisk's controller does not pass gRPC). The answer is turned into the REST v2 JSON
response, so `mlfn invoke` prints the same as with --protocol v2. Needs grpcio (the `grpc` extra)."""
from __future__ import annotations

import base64
from typing import Any, Optional
from urllib.parse import urlsplit

from mlfn.errors import MlfnError

SERVICE = "/inference.GRPCInferenceService/"


class GrpcInvokeError(MlfnError):
    pass


def grpc_target(url: str, host: Optional[str] = None) -> tuple:
    """(address to connect to, TLS?, authority or None) of a function URL. With `host` (a
    Knative ingress address, e.g. 127.0.0.1:31080) the call goes there with the URL's host
    name as the authority, which the ingress routes by."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrpcInvokeError(f"{url} is not a valid URL; use http://HOST:PORT as printed by 'mlfn run'.")
    tls = parts.scheme == "https"
    address = f"{parts.hostname}:{parts.port or (443 if tls else 80)}"
    if not host:
        return address, tls, None
    return (host if ":" in host else f"{host}:{443 if tls else 80}"), tls, parts.netloc


def _rpc(channel, method: str, request, timeout: float, where: str):
    import grpc

    from mlfn_runtime.oip_grpc import RPCS

    stub = channel.unary_unary(SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=RPCS[method][1].FromString)
    try:
        return stub(request, timeout=timeout)
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.UNAVAILABLE and "connect" in (e.details() or "").lower():
            raise GrpcInvokeError(f"Cannot connect to {where} over gRPC; is the function running with "
                                  "serving.grpc: true (mlfn run)?") from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise GrpcInvokeError(f"{where} did not answer {method} within {timeout:.0f} s.") from None
        raise GrpcInvokeError(f"The function at {where} answered gRPC {code.name}: {e.details()}") from None


def infer(url: str, model: str, tensors: list, timeout: float, host: Optional[str] = None) -> dict:
    """ModelInfer with `tensors` (REST v2 input dicts: name, shape, datatype, data) ->
    the REST v2 response document."""
    import grpc

    from mlfn_runtime.oip_grpc import MESSAGES

    target, tls, authority = grpc_target(url, host)
    options = [("grpc.default_authority", authority)] if authority else []
    request = MESSAGES["ModelInferRequest"](model_name=model)
    for t in tensors:
        request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        request.raw_input_contents.append(_raw(t))
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options) if tls else \
        grpc.insecure_channel(target, options)
    with channel:
        response = _rpc(channel, "ModelInfer", request, timeout, url)
    return as_rest_document(response)


def model_inputs(url: str, model: str, timeout: float, host: Optional[str] = None) -> list:
    """The model's input metadata ([{name, datatype, shape}]) from ModelMetadata."""
    import grpc

    from mlfn_runtime.oip_grpc import MESSAGES

    target, tls, authority = grpc_target(url, host)
    options = [("grpc.default_authority", authority)] if authority else []
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options) if tls else \
        grpc.insecure_channel(target, options)
    with channel:
        meta = _rpc(channel, "ModelMetadata", MESSAGES["ModelMetadataRequest"](name=model), timeout, url)
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs]


def _raw(t: dict) -> bytes:
    """A REST v2 input tensor's data as gRPC raw contents (BYTES: base64 text -> length-prefixed bytes)."""
    import numpy as np

    if t["datatype"] == "BYTES":
        items = [base64.b64decode(v) for v in t["data"]]
        return b"".join(len(b).to_bytes(4, "little") + b for b in items)
    from mlfn_runtime.tensors import NUMPY_OF_V2

    dtype = NUMPY_OF_V2.get(t["datatype"])
    if dtype is None:
        raise GrpcInvokeError(f"Input {t['name']!r} has datatype {t['datatype']}, which mlfn invoke cannot send.")
    return np.asarray(t["data"], dtype=dtype).tobytes()


def as_rest_document(response) -> dict:
    """A ModelInferResponse as the JSON document REST v2 answers."""
    import numpy as np

    from mlfn_runtime.tensors import NUMPY_OF_V2

    outputs = []
    for i, o in enumerate(response.outputs):
        raw = response.raw_output_contents[i] if i < len(response.raw_output_contents) else b""
        data: Any = np.frombuffer(raw, dtype=NUMPY_OF_V2[o.datatype]).tolist() if o.datatype in NUMPY_OF_V2 else []
        outputs.append({"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": data})
    doc = {"model_name": response.model_name, "model_version": response.model_version, "outputs": outputs}
    if response.id:
        doc["id"] = response.id
    return doc
