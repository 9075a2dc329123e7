"""The Swagger 2.0 document `wsk api create --config-file FILE` takes for OpenWhisk's API
Gateway: base path → the function's default alias exported as a web action (`.http`,
so the gateway passes headers, e.g. X-API-Key, and the body through unchanged).

The wsk CLI requires `basePath`, `info.title` and `paths`; every operation names its
action in `x-openwhisk` (namespace, package, action, url) and the gateway's assembly
invokes that URL (`x-gateway-configuration`)."""
from __future__ import annotations

import re

from mlfn.errors import ConfigError

OPERATIONS = (("post", "/predict", "predict", "Predict: the JSON shapes of the runtime, or a raw image body"),)


def check_base_path(base_path: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*", base_path or ""):
        raise ConfigError(f"--api {base_path!r} is not a base path like /digits (letters, digits, . _ ~ -).")
    return base_path


def gateway_swagger(function: str, base_path: str, namespace: str, web_url: str, alias: str = "default") -> dict:
    url = web_url + ".http"
    paths, cases = {}, []
    for method, path, op_id, summary in OPERATIONS:
        paths.setdefault(path, {})[method] = {
            "operationId": op_id, "summary": summary,
            "consumes": ["application/json", "image/png", "image/jpeg"], "produces": ["application/json"],
            "responses": {"200": {"description": "predictions"}, "400": {"description": "bad input"},
                          "401": {"description": "missing or invalid API key / token"},
                          "403": {"description": "credential outside its scopes"},
                          "429": {"description": "rate limit exceeded"}},
            "x-openwhisk": {"namespace": namespace, "package": function, "action": alias, "url": url},
        }
        cases.append({"operations": [op_id], "execute": [{"invoke": {"target-url": url, "verb": "keep"}}]})
    return {
        "swagger": "2.0",
        "basePath": check_base_path(base_path),
        "info": {"title": function, "version": "1.0.0",
                 "description": f"mlfn function {function}: send 'X-API-Key: KEY' or 'Authorization: Bearer "
                                "TOKEN' when the function demands credentials (mlfn keys)."},
        "schemes": ["https"],
        "paths": paths,
        "x-gateway-configuration": {"assembly": {"execute": [{"operation-switch": {"case": cases}}]},
                                    "cors": {"enabled": True}},
    }
