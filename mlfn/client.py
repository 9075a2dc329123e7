"""Calling a running function directly over HTTP (what `mlfn invoke URL` does).

Requests follow actions/README.md: `{"image": b64}` for one image, `{"images": [...]}` for
several, or a JSON document given by the user. The same request can be sent through the
plain predict endpoint, the OpenWhisk action protocol (`/init` once, then `/run` with the
body the invoker sends), OIP v2 or TF Serving.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from mlfn.errors import MlfnError

PROTOCOLS = ("predict", "openwhisk", "v2", "v1", "grpc")


class InvokeError(MlfnError):
    pass


def build_payload(images: tuple = (), json_input: Optional[str] = None, model: Optional[str] = None) -> dict:
    """A request body from image files and/or a JSON file or literal."""
    if images and json_input:
        raise InvokeError("Give either --image or --json, not both.")
    if not images and not json_input:
        raise InvokeError("Nothing to send: give --image FILE or --json FILE|JSON.")
    if images:
        encoded = []
        for name in images:
            p = Path(name)
            if p.is_dir():
                raise InvokeError(f"--image {name} is a folder; give an image file (repeat --image for a batch).")
            if not p.is_file():
                raise InvokeError(f"Image file {name} does not exist.")
            data = p.read_bytes()
            if not _looks_like_image(data):
                raise InvokeError(f"--image {name} is not an image the function can decode (Pillow does not "
                                  "recognize it); send an image file, or tensors with --json.")
            encoded.append(base64.b64encode(data).decode("ascii"))
        payload: dict = {"image": encoded[0]} if len(encoded) == 1 else {"images": encoded}
    else:
        text = json_input
        p = Path(json_input)
        if not json_input.lstrip().startswith(("{", "[")) and p.is_file():
            text = p.read_text()
        elif not json_input.lstrip().startswith(("{", "[")):
            raise InvokeError(f"--json {json_input!r} is neither a file nor a JSON document.")
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvokeError(f"--json is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}.") from None
        if not isinstance(payload, dict):
            payload = {"inputs": payload}
    if model:
        payload["model"] = model
    return payload


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def _looks_like_image(data: bytes) -> bool:
    """True when the data starts like a common image file, or Pillow (what the function's
    decode_image uses) recognizes it; only the header is read. A damaged image still goes
    to the function, which says what is wrong with it."""
    import io

    from PIL import Image, UnidentifiedImageError

    if data.startswith(_IMAGE_MAGIC):
        return True
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def check_strict_json(payload: dict) -> None:
    """Platform APIs (OpenWhisk, Knative ingress) take strict JSON: refuse NaN/Infinity in one
    sentence instead of failing inside the HTTP library."""
    try:
        json.dumps(payload, allow_nan=False)
    except ValueError:
        raise InvokeError("--json holds NaN or Infinity, which a deployed function's API cannot carry "
                          "(strict JSON); send finite numbers.") from None


def _post(session, url: str, body: Any, timeout: float):
    """POST `body` as JSON exactly as the user wrote it: NaN and Infinity are sent as the
    tokens Python's JSON reader accepts, so the function (not the client) judges them."""
    import requests

    data = json.dumps(body, allow_nan=True).encode()
    try:
        return session.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)
    except requests.ConnectionError:
        raise InvokeError(f"Cannot connect to {url}; is the function running (mlfn run)?") from None
    except requests.Timeout:
        raise InvokeError(f"{url} did not answer within {timeout:.0f} s.") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, ValueError):
        raise InvokeError(f"{url} is not a valid URL; use http://HOST:PORT as printed by 'mlfn run'.") from None


def _json(resp) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise InvokeError(f"{resp.url} answered HTTP {resp.status_code} with a body that is not JSON.") from None


def _only_model(session, base: str, timeout: float, host: Optional[str] = None) -> str:
    """The model to address on /v2 and /v1 when --model is not given: the function's only one.
    `host`: an ingress address to ask instead, with the URL's host in the Host header."""
    import requests
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    url, headers = (f"{parts.scheme}://{host}/healthz", {"Host": parts.netloc}) if host else (f"{base}/healthz", {})
    try:
        resp = session.get(url, headers=headers, timeout=timeout)
    except (requests.RequestException, ValueError):
        raise InvokeError(f"Cannot connect to {base}/healthz; is the function running (mlfn run)?") from None
    models = (_json(resp) or {}).get("models") if resp.status_code == 200 else None
    if not models:
        raise InvokeError(f"The function at {base} did not list its models on /healthz; name one with --model.")
    if len(models) > 1:
        raise InvokeError(f"The function at {base} serves several models ({', '.join(models)}); "
                          "choose one with --model.")
    return models[0]


def _images(payload: dict) -> Optional[list]:
    if "image" in payload:
        return [payload["image"]]
    return payload.get("images")


def _v2_body(session, base: str, model: str, payload: dict, timeout: float) -> dict:
    """An Open Inference Protocol v2 request from what the other protocols take: images as
    one BYTES tensor; `inputs` as a tensor (bare nested list) or {input name: tensor};
    `instances` as rows of a tensor, of {input name: value}, or of encoded images. A body
    that already holds v2 tensors (`inputs: [{name, shape, datatype, data}]`) is sent as given."""
    tensors = _v2_tensors(payload)
    if tensors is None:
        return {k: v for k, v in payload.items() if k != "model"}
    meta = _json(session.get(f"{base}/v2/models/{model}", timeout=timeout))
    described = (meta or {}).get("inputs") if isinstance(meta, dict) else None
    return {"inputs": _v2_inputs(described or [{"name": "input_0"}], tensors, model)}


def _v2_inputs(described: list, tensors: list, model: str) -> list:
    """OIP v2 input tensors for [(input name or None, value)], given the model's inputs."""
    by_name = {d.get("name"): d for d in described}
    out = []
    for name, value in tensors:
        spec = by_name.get(name) or (described[0] if name is None else {"name": name})
        if name is not None and name not in by_name:
            known = ", ".join(str(k) for k in by_name)
            raise InvokeError(f"--json names input {name!r}, but model {model!r} takes: {known}.")
        out.append(_v2_tensor(spec, value, name or "inputs"))
    return out


def _grpc_infer(base: str, model: str, payload: dict, timeout: float, host: Optional[str]) -> dict:
    """The REST v2 request as a gRPC ModelInfer call; returns the REST v2 response document."""
    from mlfn import grpc_client

    tensors = _v2_tensors(payload)
    if tensors is None:
        raise InvokeError("--protocol grpc sends images (--image) or tensors ('inputs' or 'instances' in --json); "
                          "OIP v2 tensor documents go with --protocol v2.")
    try:
        described = grpc_client.model_inputs(base, model, timeout, host)
        return grpc_client.infer(base, model, _v2_inputs(described, tensors, model), timeout, host)
    except grpc_client.GrpcInvokeError as e:
        raise InvokeError(str(e)) from None


def _v2_tensors(payload: dict) -> Optional[list]:
    """[(input name or None for the first, value)] or None when the body is v2 already."""
    images = _images(payload)
    if images is not None:
        return [(None, list(images))]
    inputs, instances = payload.get("inputs"), payload.get("instances")
    if isinstance(inputs, dict):
        return list(inputs.items())
    if isinstance(inputs, list) and inputs and not isinstance(inputs[0], dict):
        return [(None, inputs)]
    if isinstance(instances, list) and instances:
        if all(isinstance(row, dict) and set(row) != {"b64"} for row in instances):
            names = list(dict.fromkeys(k for row in instances for k in row))
            missing = [n for n in names if any(n not in row for row in instances)]
            if missing:
                raise InvokeError(f"--json 'instances' rows must all name the same inputs; some lack {missing[0]!r}.")
            return [(n, [row[n] for row in instances]) for n in names]
        if all(isinstance(row, dict) and set(row) == {"b64"} for row in instances):
            return [(None, [row["b64"] for row in instances])]
        return [(None, instances)]
    return None


def _v2_tensor(spec: dict, value: Any, label: str) -> dict:
    import numpy as np

    name = spec.get("name") or "input_0"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {"name": name, "shape": [len(value)], "datatype": "BYTES", "data": list(value)}
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvokeError(f"--json {label!r} is not a rectangular nested list of numbers.") from None
    if array.dtype.kind not in "biuf":
        raise InvokeError(f"--json {label!r} must hold numbers to send it as an OIP v2 tensor.")
    return {"name": name, "shape": list(array.shape), "datatype": spec.get("datatype") or "FP32",
            "data": array.ravel().tolist()}


def _v1_body(payload: dict) -> dict:
    """A TensorFlow Serving request: images as `instances` of `{"b64": ...}`; anything else as given."""
    images = _images(payload)
    if images is not None:
        return {"instances": [{"b64": b} for b in images]}
    return {k: v for k, v in payload.items() if k != "model"}


def invoke_url(url: str, payload: dict, protocol: str = "predict", timeout: float = 60.0,
               host: Optional[str] = None) -> dict:
    """Send payload to a running function at url; returns {"result", "status_code", "duration_ms"}.
    `host`: gRPC only, a Knative ingress address to call with the URL's host as authority."""
    import requests

    if protocol not in PROTOCOLS:
        raise InvokeError(f"Unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}.")
    base = url.rstrip("/")
    try:
        requests.Request("GET", base).prepare()
    except (requests.RequestException, ValueError):
        raise InvokeError(f"{url} is not a valid URL; use http://HOST:PORT as printed by 'mlfn run'.") from None
    model = payload.get("model")
    t0 = time.perf_counter()
    with requests.Session() as s:
        if protocol == "predict":
            resp = _post(s, f"{base}/predict", payload, timeout)
        elif protocol == "openwhisk":
            init = _post(s, f"{base}/init", {"value": {"name": "mlfn-invoke", "main": "main", "binary": False,
                                                        "env": {}}}, timeout)
            if init.status_code not in (200, 403):  # 403: already initialized, as the invoker expects
                raise InvokeError(f"/init at {base} failed with HTTP {init.status_code}: {init.text[:200]}")
            body = {
                "value": payload,
                "namespace": "guest",
                "action_name": "/guest/mlfn-invoke",
                "action_version": "0.0.1",
                "activation_id": uuid.uuid4().hex,
                "transaction_id": uuid.uuid4().hex,
                "deadline": str(int(time.time() * 1000) + int(timeout * 1000)),
            }
            resp = _post(s, f"{base}/run", body, timeout)
        else:
            model = model or _only_model(s, base, timeout, host)
            if protocol == "grpc":
                result = _grpc_infer(base, model, payload, timeout, host)
                return {"result": result, "status_code": 200, "protocol": protocol,
                        "duration_ms": round((time.perf_counter() - t0) * 1000, 2)}
            if protocol == "v2":
                resp = _post(s, f"{base}/v2/models/{model}/infer", _v2_body(s, base, model, payload, timeout), timeout)
            else:
                resp = _post(s, f"{base}/v1/models/{model}:predict", _v1_body(payload), timeout)
        duration = (time.perf_counter() - t0) * 1000
        result = _json(resp)
    if resp.status_code >= 400 or (isinstance(result, dict) and "error" in result and protocol != "openwhisk"):
        msg = result.get("error") if isinstance(result, dict) else result
        raise InvokeError(f"The function at {base} answered HTTP {resp.status_code}: {msg}")
    if protocol == "openwhisk" and isinstance(result, dict) and "error" in result:
        raise InvokeError(f"The action at {base} returned an application error: {result['error']}")
    return {"result": result, "status_code": resp.status_code, "duration_ms": round(duration, 2), "protocol": protocol}


def summarize(result: Any) -> str:
    """One line per prediction: `7  (score 0.981)`; JSON when there is no label."""
    preds = result.get("predictions") if isinstance(result, dict) else None
    if isinstance(result, dict) and "results" in result:
        return "\n".join(f"{m}: {summarize(r)}" for m, r in result["results"].items())
    if isinstance(preds, list) and preds and all(isinstance(p, dict) and "label" in p for p in preds):
        return "\n".join(
            f"{p['label']}  (score {p['score']:.3f})" if isinstance(p.get("score"), (int, float)) else str(p["label"])
            for p in preds
        )
    return json.dumps(result, indent=2)
