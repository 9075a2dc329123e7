"""A tiny OpenWhisk action runtime for the controller-semantics tests (stdlib only).

/init once (403 after), honouring `code` (plain Python source with `main`) and `env`;
/run answers {"version": $MLFN_VERSION, "value": ...} unless code was sent, and obeys
test switches in the value: {"fail": msg} -> application error, {"sleep": s},
{"crash": true} -> HTTP 500 (developer error). Prints the log sentinel after each run.

A batch {"instances": [[...], ...]} is answered like a classifier: {"predictions":
[{"index": i, "label": "i"}]} with i the row's argmax. Versions misbehave on demand through
their env (deploy parameters), for the rollout tests:
MLFN_TEST_FAIL_RATE=0.3 -> that fraction of the requests without "instances" answer an
application error (evenly spread); MLFN_TEST_DELAY=0.2 -> every run takes that many seconds
more; MLFN_TEST_WRONG=1 -> classifications are off by one.
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
STATE = {"init": False, "main": None, "runs": 0}


def misbehave(value):
    """(status, body) when this version's env says to fail this request, else None."""
    delay = float(os.environ.get("MLFN_TEST_DELAY") or 0)
    if delay:
        time.sleep(delay)
    rate = float(os.environ.get("MLFN_TEST_FAIL_RATE") or 0)
    if rate and not (isinstance(value, dict) and "instances" in value):
        STATE["runs"] += 1
        n = STATE["runs"]
        if int(n * rate + 1 - rate) > int((n - 1) * rate + 1 - rate):  # the 1st, then every 1/rate-th
            return 200, {"error": f"post-processing failed on input {n}"}
    return None


def classify(instances):
    shift = 1 if os.environ.get("MLFN_TEST_WRONG") == "1" else 0
    out = []
    for row in instances:
        flat = row
        while flat and isinstance(flat[0], list):
            flat = [x for r in flat for x in r]
        i = (max(range(len(flat)), key=lambda k: flat[k]) + shift) % len(flat)
        out.append({"index": i, "label": str(i)})
    return {"predictions": out}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/init":
            if STATE["init"]:
                return self.reply(403, {"error": "Cannot initialize the action more than once."})
            v = body.get("value") or {}
            for k, val in (v.get("env") or {}).items():
                os.environ[k] = str(val)
            routes = (v.get("env") or {}).get("MLFN_ALIAS_ROUTES")
            if routes:  # the weighted-alias conductor, as function images run it (mlfn_runtime.router)
                from functools import partial

                from mlfn_runtime.router import conduct, parse_routes

                STATE["main"] = partial(conduct, routes=parse_routes(routes))
            elif v.get("code"):
                scope = {}
                try:
                    exec(compile(v["code"], "action", "exec"), scope)
                    STATE["main"] = scope[v.get("main") or "main"]
                except Exception as e:
                    return self.reply(502, {"error": f"bad code: {e}"})
            STATE["init"] = True
            return self.reply(200, {"ok": True})
        if self.path == "/run":
            value = body.get("value")
            print(f"run {body.get('activation_id')} on {os.environ.get('MLFN_VERSION')}", flush=True)
            try:
                if STATE["main"]:
                    return self.reply(200, STATE["main"](value))
                bad = misbehave(value)
                if bad:
                    return self.reply(*bad)
                if isinstance(value, dict) and isinstance(value.get("instances"), list):
                    return self.reply(200, classify(value["instances"]))
                if isinstance(value, dict):
                    if value.get("sleep"):
                        time.sleep(float(value["sleep"]))
                    if value.get("crash"):
                        return self.reply(500, {"oops": True})
                    if value.get("fail"):
                        return self.reply(200, {"error": value["fail"]})
                return self.reply(200, {"version": os.environ.get("MLFN_VERSION"), "value": value})
            finally:
                print(SENTINEL, flush=True)
                print(SENTINEL, file=sys.stderr, flush=True)
        self.reply(404, {"error": "not found"})


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", 8080))), H).serve_forever()
