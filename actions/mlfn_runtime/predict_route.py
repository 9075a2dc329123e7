"""`POST /predict` (and `POST /`): the JSON request shapes of actions/README.md, or a raw
image body (`Content-Type: image/*` or `application/octet-stream`, `?model=NAME`)."""
from __future__ import annotations

from mlfn_runtime.errors import InvalidInput
from mlfn_runtime.http_messages import Response


def predict(state, req, params) -> Response:
    fn = state.require_function()
    ctype = req.content_type
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        if not req.body:
            raise InvalidInput("the request body is empty; send an image")
        request = {"image": req.body}
        if "model" in req.query:
            request["model"] = req.query["model"]
    else:
        request = req.json()
    result = fn.predict(request)
    return Response(200, result, model=result.get("model") or "")
