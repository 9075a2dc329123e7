"""A Prometheus test server: the instant-query endpoint of Prometheus' HTTP API
(GET|POST /api/v1/query with `query` and optional `time`), answering from per-revision
numbers the test sets, and recording every query it was sent.

    prom = PrometheusServer()
    prom.set("digits-v2", requests=40, errors=12, p99_ms=80)   # per query window
    prom.queries  -> [PromQL strings, in order]

It understands mlfn's default queries (and templates of the same shape): a query naming
`revision_name="R"` asks for R's numbers; `histogram_quantile(` is the p99,
`response_code_class="5xx"` the errors, anything else the request count. A revision it
has no numbers for is an empty vector, like a Prometheus with no samples. PromQL with
unbalanced brackets or quotes is answered 400 bad_data, as Prometheus does.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PAIRS = {"(": ")", "{": "}", "[": "]"}


def balanced(promql: str) -> bool:
    stack, quoted = [], False
    for ch in promql:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in PAIRS:
            stack.append(PAIRS[ch])
        elif ch in PAIRS.values():
            if not stack or stack.pop() != ch:
                return False
    return not stack and not quoted


class PrometheusServer:
    def __init__(self):
        self.numbers: dict = {}  # revision -> {"requests", "errors", "p99_ms"}
        self.queries: list = []
        self.lock = threading.Lock()
        prom = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, params: dict):
                query = (params.get("query") or [""])[0]
                with prom.lock:
                    prom.queries.append(query)
                code, doc = prom.evaluate(query, float((params.get("time") or [time.time()])[0]))
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                self._answer(parse_qs(url.query))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._answer(parse_qs(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, revision: str, requests: float, errors: float = 0, p99_ms=None) -> None:
        with self.lock:
            self.numbers[revision] = {"requests": requests, "errors": errors, "p99_ms": p99_ms}

    def evaluate(self, query: str, at: float):
        if not query or not balanced(query):
            return 400, {"status": "error", "errorType": "bad_data",
                         "error": f"1:1: parse error: unbalanced or empty query {query!r}"}
        m = re.search(r'revision_name="([^"]+)"', query)
        numbers = self.numbers.get(m.group(1)) if m else None
        if numbers is None:
            return 200, {"status": "success", "data": {"resultType": "vector", "result": []}}
        if "histogram_quantile(" in query:
            value = numbers["p99_ms"]
        elif 'response_code_class="5xx"' in query:
            value = numbers["errors"]
        else:
            value = numbers["requests"]
        result = [] if value is None else [{"metric": {}, "value": [at, str(value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
