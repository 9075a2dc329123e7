"""`GET /openapi.json`: an OpenAPI 3.1 document of this function: its routes, each model's
input and output tensors (names, shapes, dtypes), the image types an image pipeline
accepts, and the security schemes in force (from function.json's `auth`). API gateways
and portals import it; `mlfn render --api` turns the same facts into a gateway config."""
from __future__ import annotations

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")
DTYPES = {"FP32": ("number", "float"), "FP16": ("number", "float"), "FP64": ("number", "double"),
          "INT8": ("integer", "int32"), "UINT8": ("integer", "int32"), "INT16": ("integer", "int32"),
          "INT32": ("integer", "int32"), "INT64": ("integer", "int64"), "BOOL": ("boolean", None),
          "BYTES": ("string", "byte")}
ERRORS = {"400": "bad input", "401": "missing or invalid credentials", "403": "credential outside its scopes",
          "404": "unknown model", "413": "payload too large", "429": "rate limit exceeded (Retry-After)"}


def _tensor(t: dict) -> dict:
    kind, fmt = DTYPES.get(t["datatype"], ("number", None))
    leaf = {"type": kind, **({"format": fmt} if fmt else {})}
    return {"type": "array", "description": f"{t['datatype']} tensor, shape {t['shape']} (-1: batch)",
            "items": leaf if len(t["shape"]) <= 1 else {"type": "array"},
            "x-mlfn-tensor": {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}}


def model_schemas(function) -> dict:
    """component schemas per model: `<model>.inputs`, `<model>.outputs`, and the image types."""
    out = {}
    for name, entry in (function.models.items() if function is not None else ()):
        meta = entry.metadata()
        out[f"{name}.inputs"] = {"type": "object", "properties": {t["name"]: _tensor(t) for t in meta["inputs"]},
                                 "x-mlfn-image-types": list(IMAGE_TYPES) if entry.pre.takes_images else []}
        out[f"{name}.outputs"] = {"type": "object", "properties": {t["name"]: _tensor(t) for t in meta["outputs"]}}
    return out


def security_schemes(auth) -> dict:
    if not auth.enabled:
        return {}
    bearer = {"type": "http", "scheme": "bearer",
              "description": "an mlfn API key" + (", or a JWT access token" if auth.jwt else "")}
    if auth.jwt:
        bearer["bearerFormat"] = "JWT or mlfn API key"
    return {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}, "bearer": bearer}


def _operation(summary: str, scope, guard, body: bool, schema_ref=None) -> dict:
    op = {"summary": summary, "responses": {"200": {"description": "OK"}}}
    needed = guard.route_scope(scope)
    op["security"] = [{"apiKey": []}, {"bearer": []}] if needed else []
    if needed:
        op["x-mlfn-scope"] = needed
    if body:
        content = {"application/json": {"schema": {"type": "object"}}}
        if schema_ref:
            content["application/json"]["schema"] = {"$ref": schema_ref}
        content.update({t: {"schema": {"type": "string", "contentMediaType": t}} for t in IMAGE_TYPES[:2]})
        op["requestBody"] = {"required": True, "content": content}
    for code, text in ERRORS.items():
        if needed or code not in ("401", "403", "429"):
            op["responses"][code] = {"description": text}
    return op


def build_document(function, guard, routes) -> dict:
    """The document for `function` guarded by `guard`, listing `routes` (routes.ROUTES)."""
    first = next(iter(function.models)) if function is not None else None
    paths: dict = {}
    for route in routes:
        if route.pattern.endswith("*}") or route.endpoint in ("init", "run"):
            continue  # catch-all 404 routes; the OpenWhisk invoker's protocol
        path = route.pattern.replace("[/versions/{version}]", "")
        has_body = route.body != "none"
        ref = f"#/components/schemas/{first}.inputs" if has_body and first and route.endpoint == "predict" else None
        methods = [m for m in route.methods if m != "HEAD"][:1]
        paths.setdefault(path, {})[methods[0].lower()] = _operation(route.endpoint, route.scope, guard, has_body, ref)
        if "{name}" in path:
            names = list(function.models) if function else []
            paths[path]["parameters"] = [{"name": "name", "in": "path", "required": True,
                                          "schema": {"type": "string", "enum": names}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": function.name if function else "mlfn function", "version": "1"},
        "paths": paths,
        "components": {"schemas": model_schemas(function), "securitySchemes": security_schemes(guard.settings)},
    }
