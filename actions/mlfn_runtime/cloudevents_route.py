"""CloudEvents 1.0 over HTTP (the HTTP protocol binding; Knative Eventing's data plane):
`POST /` and `POST /events`.

A request is an event when it carries `ce-specversion` (binary mode: the `ce-*` headers
are the attributes, the body is the data and `Content-Type` its type) or has the
Content-Type `application/cloudevents+json` (structured mode: one JSON object holding the
attributes and `data` or `data_base64`). Anything else on `POST /` is a plain predict
request (`predict_route`). The data is decoded as `/predict` decodes a body: an image by
its content type, or the JSON request shapes.

The answer is an event in binary mode: type `dev.mlfn.inference.response`, source
`/mlfn/<function>/<version>`, a new id, the extension `mlfnrequestid` naming the id of the
event it answers, the prediction as JSON data. With `serving.events.reply: false` the
answer is 202 with no body. Deliveries of one event twice (same source and id) are
answered twice, with no other effect. An event that cannot be read is a 400 naming why."""
from __future__ import annotations

import base64
import binascii
import datetime
import json
import uuid

from mlfn_runtime import predict_route
from mlfn_runtime.errors import InvalidInput
from mlfn_runtime.event_settings import function_version
from mlfn_runtime.http_messages import Response

SPECVERSION = "1.0"
REPLY_TYPE = "dev.mlfn.inference.response"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("specversion", "id", "source", "type")


def is_event(req) -> bool:
    return req.headers.get("ce-specversion") is not None or req.content_type in (STRUCTURED, BATCH)


def root(state, req, params) -> Response:
    """`POST /`: an event, or else a plain predict request."""
    if is_event(req):
        return event(state, req, params)
    return predict_route.predict(state, req, params)


def event(state, req, params) -> Response:
    """`POST /events` (and an event on `POST /`)."""
    fn = state.require_function()
    attributes, request = read_event(req)
    result = fn.predict(request)
    model = result.get("model") or ""
    if not state.event_settings.reply:
        return Response(202, b"", model=model)
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": str(uuid.uuid4()),
        "ce-source": f"/mlfn/{fn.name}/{function_version()}",
        "ce-type": REPLY_TYPE,
        "ce-time": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
        "ce-mlfnrequestid": attributes["id"],
        "Content-Type": "application/json",
    }
    return Response(200, result, headers, model=model)


def read_event(req) -> tuple:
    """(attributes, predict request) of a binary- or structured-mode event; 400 otherwise."""
    if req.content_type == BATCH:
        raise InvalidInput("batched CloudEvents (application/cloudevents-batch+json) are not accepted; send one event per request")
    if req.content_type == STRUCTURED:
        envelope = req.json()
        if not isinstance(envelope, dict):
            raise InvalidInput("a structured CloudEvent must be a JSON object")
        attributes = {k: v for k, v in envelope.items() if k not in ("data", "data_base64")}
        _check_attributes(attributes, "")
        ctype = str(attributes.get("datacontenttype") or "application/json").split(";")[0].strip().lower()
        return attributes, _structured_data(envelope, ctype)
    attributes = {k[3:].lower(): v for k, v in req.headers.items() if k.lower().startswith("ce-")}
    _check_attributes(attributes, "ce-")
    return attributes, _data(req.body, req.content_type or "application/json", req.query.get("model"))


def _check_attributes(attributes: dict, prefix: str) -> None:
    missing = [a for a in REQUIRED if not attributes.get(a)]
    if missing:
        raise InvalidInput(f"the CloudEvent has no {', '.join(prefix + m for m in missing)}; "
                           f"an event needs {', '.join(prefix + a for a in REQUIRED)}")
    if attributes["specversion"] != SPECVERSION:
        raise InvalidInput(f"the CloudEvent has specversion {attributes['specversion']!r}; this function takes {SPECVERSION}")


def _structured_data(envelope: dict, ctype: str):
    if "data_base64" in envelope:
        try:
            raw = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidInput("'data_base64' of the CloudEvent is not valid base64") from None
        return _data(raw, ctype, None)
    data = envelope.get("data")
    if data is None:
        raise InvalidInput("the CloudEvent has no data; send the request as 'data' or 'data_base64'")
    if _is_image(ctype):
        return {"image": data}  # base64 text of the image
    if isinstance(data, str):
        return _data(data.encode("utf-8"), ctype, None)
    return data


def _data(body: bytes, ctype: str, model):
    if not body:
        raise InvalidInput("the CloudEvent has no data; send the request as the body")
    if _is_image(ctype):
        request = {"image": body}
        if model:
            request["model"] = model
        return request
    if ctype != "application/json" and not ctype.endswith("+json") and not ctype.startswith("text/"):
        raise InvalidInput(f"the CloudEvent's data has content type {ctype!r}; send an image or application/json")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidInput(f"the CloudEvent's data is not valid JSON: {e}") from None


def _is_image(ctype: str) -> bool:
    return ctype.startswith("image/") or ctype == "application/octet-stream"
