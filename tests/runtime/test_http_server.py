"""The HTTP server in-process: /predict, /healthz, /metrics, limits and error mapping."""
import http.client
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from .conftest import b64, digit_png, make_function_dir, running


def test_predict_json_and_raw_image(digits_server, digits):
    x, y = digits
    r = requests.post(digits_server + "/predict", json={"image": b64(digit_png(x[0]))}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(y[0])
    r = requests.post(digits_server + "/predict", data=digit_png(x[1]), headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(y[1])


@pytest.mark.parametrize("data,ctype,status,message", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"", "application/json", 400, "body is empty"),
    (b"\xff\xfe garbage", "application/json", 400, "not UTF-8 JSON"),
    (b"GIF89a broken", "image/gif", 400, "'image': is not an image: 13 bytes of text starting 'GIF89a broken'"),
    (json.dumps({"inputs": [[[[1.0]] * 8] * 8]}).replace("1.0", "NaN", 1).encode(), "application/json", 400,
     "'inputs' holds NaN or infinite values"),
    (json.dumps({"inputs": [[1.0] * 3]}).encode(), "application/json", 400, "has shape [3] but model 'digits' takes [8, 8, 1]"),
    (json.dumps({"inputs": [[[[True]] * 8] * 8], "model": "x"}).encode(), "application/json", 404, "model 'x' is not in"),
])
def test_bad_input_is_4xx_and_the_next_request_succeeds(digits_server, digits, data, ctype, status, message):
    s = requests.Session()  # same keep-alive connection
    r = s.post(digits_server + "/predict", data=data, headers={"Content-Type": ctype}, timeout=10)
    assert r.status_code == status and message in r.json()["error"]
    r = s.post(digits_server + "/predict", json={"image": b64(digit_png(digits[0][0]))}, timeout=10)
    assert r.status_code == 200


def test_payload_too_large_is_413(tmp_path, rt_models, digits):
    d = make_function_dir(tmp_path / "small", rt_models, serving={"max_payload_bytes": 2000})
    with running(d) as (url, _):
        r = requests.post(url + "/predict", data=b"x" * 5000, headers={"Content-Type": "image/png"}, timeout=10)
        assert r.status_code == 413 and "at most 2000" in r.json()["error"]

        def chunks():
            for _ in range(10):
                yield b"y" * 500

        r = requests.post(url + "/predict", data=chunks(), headers={"Content-Type": "image/png"}, timeout=10)
        assert r.status_code == 413
        r = requests.post(url + "/predict", data=digit_png(digits[0][0]), headers={"Content-Type": "image/png"}, timeout=10)
        assert r.status_code == 200


def test_chunked_body_is_read(digits_server, digits):
    png = digit_png(digits[0][0])
    r = requests.post(digits_server + "/predict", data=iter([png[:10], png[10:]]),
                      headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(digits[1][0])


def test_health_routes_and_unknowns(digits_server):
    r = requests.get(digits_server + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["ready"] is True and r.json()["models"] == ["digits"]
    assert requests.get(digits_server + "/nope", timeout=5).status_code == 404
    r = requests.get(digits_server + "/predict", timeout=5)
    assert r.status_code == 405 and "takes POST" in r.json()["error"]
    r = requests.post(digits_server + "/healthz", data=b"xx", timeout=5)
    assert r.status_code in (400, 405)


def test_keep_alive_and_nodelay(digits_server, digits):
    host, port = digits_server.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    body = json.dumps({"image": b64(digit_png(digits[0][0]))})
    t0 = time.perf_counter()
    for _ in range(20):
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") != "close"
        resp.read()
    per_request = (time.perf_counter() - t0) / 20
    conn.close()
    assert per_request < 0.035  # no 40 ms delayed-ACK stall per request on one connection


def test_metrics_prometheus_text(digits_server, digits):
    requests.post(digits_server + "/predict", json={"image": b64(digit_png(digits[0][0]))}, timeout=5)
    requests.post(digits_server + "/predict", data=b"{", timeout=5)
    text = requests.get(digits_server + "/metrics", timeout=5).text
    assert "# TYPE mlfn_requests_total counter" in text
    assert 'mlfn_requests_total{model="digits",endpoint="predict",status="200"}' in text
    assert 'endpoint="predict",status="400"' in text
    assert 'mlfn_request_duration_seconds_bucket{model="digits",endpoint="predict",status="200",le="+Inf"}' in text
    assert 'mlfn_model_load_seconds{model="digits"}' in text and "mlfn_cold_starts_total 1" in text
    for line in text.splitlines():  # every sample line is `name{labels} value`
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_concurrent_clients_get_their_own_answers(tmp_path, rt_models, digits):
    x, y = digits
    for mode in ("lock", "per-thread"):
        d = make_function_dir(tmp_path / mode, rt_models, serving={"interpreter": mode})
        with running(d) as (url, _):
            expected = {i: requests.post(url + "/predict", json={"image": b64(digit_png(x[i]))}).json() for i in range(8)}
            bad = []

            def client(k):
                s = requests.Session()
                for j in range(15):
                    i = (k + j) % 8
                    got = s.post(url + "/predict", json={"images": [b64(digit_png(x[i]))] * (1 + j % 3)}).json()
                    if got["predictions"][0] != expected[i]["predictions"][0]:
                        bad.append((mode, k, j))

            ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            assert not bad


def test_main_module_serves_on_port_env_and_stops_on_sigterm(digits_dir, digits, tmp_path):
    """`python3 -m mlfn_runtime` with $PORT; SIGTERM lets an in-flight request finish, then exit 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PORT": str(port), "MLFN_FUNCTION_DIR": str(digits_dir), "K_SERVICE": "digits", "K_REVISION": "digits-00001",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "mlfn_runtime", "--host", "127.0.0.1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        idle = requests.Session()
        assert idle.get(url + "/healthz").status_code == 200  # an idle keep-alive connection stays open
        metrics = requests.get(url + "/metrics").text
        assert 'service="digits",revision="digits-00001"' in metrics
        # a slow request in flight when SIGTERM arrives: a big batch in small chunks
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"images": [b64(digit_png(digits[0][0]))] * 4}).encode()
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:100])
        time.sleep(0.2)
        proc.terminate()
        time.sleep(0.3)
        conn.send(body[100:])
        resp = conn.getresponse()
        assert resp.status == 200 and len(json.loads(resp.read())["predictions"]) == 4
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "mlfn_runtime [digits/digits-00001]: serving function 'digits'" in err and "SIGTERM" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_function_dir_missing_exits_with_a_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mlfn_runtime", "--function-dir", str(tmp_path), "--port", "0"],
                       capture_output=True, text=True, timeout=60, env={"PYTHONPATH": ":".join(sys.path)})
    assert r.returncode == 2 and "no function.json in" in r.stderr


def test_cold_import_is_light():
    """Serving a tensor-only function must not import Pillow; nothing imports TensorFlow."""
    code = ("import sys, mlfn_runtime.http_server, mlfn_runtime.function, mlfn_runtime.pipeline as p;"
            "p.Pipeline([{'scale': {'factor': 2}}], stage='pre');"
            "print(sorted(m for m in ('PIL', 'tensorflow', 'ai_edge_litert') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": ":".join(sys.path)})
    assert r.stdout.strip() == "[]", r.stderr


def test_malformed_http_gets_json_errors_and_the_server_keeps_serving(digits_server):
    host, port = digits_server.split("//")[1].split(":")
    for raw in (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"POST /predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(raw)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split()[1] == b"400" and "error" in json.loads(body)
    assert requests.get(digits_server + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("size_line", [b"-1", b"+10", b"-0x5"])
def test_signed_chunk_size_is_400_not_a_read_to_eof(digits_server, size_line):
    """A chunk size with a sign is malformed; int(x, 16) would take "-1" and read(-1)
    would then read (and buffer) until the client closes, past the payload limit."""
    host, port = digits_server.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + size_line + b"\r\n" + b"x" * 100)  # the connection stays open
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400" and "malformed chunked" in json.loads(body)["error"]
    assert requests.get(digits_server + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("body", [{"image": {"b64": None}}, {"instances": [{"b64": 5}]}, {"images": [{"b64": [1]}]}])
def test_b64_that_is_not_text_is_400(digits_server, body):
    r = requests.post(digits_server + "/predict", json=body, timeout=10)
    assert r.status_code == 400 and "'b64' must be base64 text" in r.json()["error"]


def test_a_body_on_a_route_that_takes_none_gets_that_routes_answer(digits_server):
    """404 for no route and 405 for a wrong method, as without a body (was a 400 'takes no
    request body' that hid the real mistake); the unread body closes the connection."""
    r = requests.post(digits_server + "/nope", json={"image": "x"}, timeout=5)
    assert r.status_code == 404 and "no route /nope" in r.json()["error"]
    r = requests.post(digits_server + "/healthz", data=b"x", timeout=5)
    assert r.status_code == 405 and "takes GET or HEAD" in r.json()["error"]
    assert r.headers.get("Connection") == "close"
    r = requests.post(digits_server + "/metrics", data=iter([b"a", b"b"]), timeout=5)  # chunked
    assert r.status_code == 405
    assert requests.get(digits_server + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("argv", [[], ["--host", "127.0.0.1"]])
def test_a_port_env_that_is_not_a_port_exits_with_one_sentence(tmp_path, argv):
    env = {"PORT": "eighty", "MLFN_FUNCTION_DIR": str(tmp_path), "PYTHONPATH": ":".join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "mlfn_runtime", *argv], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "PORT is 'eighty'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("body,message", [
    ({"inputs": {}}, "'inputs' is an empty object"),
    ({"inputs": [[[[2 ** 70]] * 8] * 8]}, "integers beyond 64 bits"),
])
def test_empty_named_inputs_and_huge_integers_get_messages_that_say_so(digits_server, body, message):
    r = requests.post(digits_server + "/predict", json=body, timeout=10)
    assert r.status_code == 400 and message in r.json()["error"]


def test_a_max_image_pixels_env_that_is_not_a_count_exits_with_one_sentence(digits_dir):
    env = {"MLFN_MAX_IMAGE_PIXELS": "lots", "PYTHONPATH": ":".join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "mlfn_runtime", "--function-dir", str(digits_dir), "--port", "0"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "MLFN_MAX_IMAGE_PIXELS is 'lots'" in r.stderr and "Traceback" not in r.stderr


def metrics_once_answered(url: str) -> str:
    """/metrics once the earlier request is counted: the server counts a request after its
    answer is written, so the client can ask before that thread got there (at most 2 s)."""
    deadline = time.monotonic() + 2.0
    while True:
        metrics = requests.get(url + "/metrics", timeout=5).text
        if "mlfn_inflight_requests 1\n" in metrics or time.monotonic() > deadline:
            return metrics
        time.sleep(0.01)


def test_a_custom_post_step_returning_what_json_cannot_hold_is_a_500_that_says_so(tmp_path, rt_models, digits):
    """Was a TypeError in the response encoder: the connection dropped with no answer."""
    files = {"post.py": "def classes(y):\n    return {'classes': {int(y.argmax())}}\n"}
    d = make_function_dir(tmp_path / "setpost", rt_models, files=files, models=[
        {"name": "d", "file": "digits_float.tflite", "pre": [{"decode_image": {}}, {"convert": {"mode": "L"}}],
         "post": [{"custom": {"file": "post.py", "function": "classes"}}]}])
    with running(d) as (url, _):
        r = requests.post(url + "/predict", json={"image": b64(digit_png(digits[0][0]))}, timeout=10)
        assert r.status_code == 500
        assert "post-processing of model 'd' returned set" in r.json()["error"] and "JSON cannot hold" in r.json()["error"]
        metrics = metrics_once_answered(url)
        assert "mlfn_inflight_requests 1\n" in metrics  # this /metrics request only
        assert 'endpoint="predict",status="500"} 1' in metrics


def test_a_result_json_cannot_hold_is_a_500_and_is_counted(digits_dir):
    """Whatever a data plane returns, the client gets an answer and the request is counted
    (an encoder error used to drop the connection and leave mlfn_inflight_requests at 1)."""
    from mlfn_runtime.function import load_function

    fn = load_function(str(digits_dir))
    fn.predict = lambda request: {"model": "digits", "predictions": [object()]}
    with running(function=fn) as (url, _):
        r = requests.post(url + "/predict", json={"inputs": [[0]]}, timeout=10)
        assert r.status_code == 500 and "cannot be encoded as JSON" in r.json()["error"]
        metrics = metrics_once_answered(url)
        assert "mlfn_inflight_requests 1\n" in metrics  # this /metrics request only
        assert 'model="digits",endpoint="predict",status="500"} 1' in metrics


def test_probes_and_metrics_answer_while_every_worker_is_busy(tmp_path, rt_models):
    """`limited` is a property of the route (mlfn_runtime.routes): with serving.workers=1
    and one slow /predict in flight, probes and /metrics answer at once; a limited route
    (/v2 server metadata) waits for the worker."""
    files = {"slow.py": "import time\ndef slow(x):\n    time.sleep(1.5)\n    return x\n"}
    d = make_function_dir(tmp_path / "slow", rt_models, files=files, serving={"workers": 1}, models=[
        {"name": "d", "file": "digits_float.tflite", "pre": [{"custom": {"file": "slow.py", "function": "slow"}}]}])
    with running(d) as (url, _):
        busy = threading.Thread(target=requests.post, args=(url + "/predict",),
                                kwargs={"json": {"inputs": [[[[0.0]] * 8] * 8]}, "timeout": 30})
        busy.start()
        time.sleep(0.4)
        for path in ("/healthz", "/livez", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2/models/d/ready"):
            t0 = time.perf_counter()
            assert requests.get(url + path, timeout=10).status_code == 200
            assert time.perf_counter() - t0 < 0.5, path
        t0 = time.perf_counter()
        assert requests.get(url + "/v2", timeout=10).status_code == 200
        assert time.perf_counter() - t0 > 0.5  # waited for the one worker
        busy.join(10)


def test_static_paths_find_the_route_the_table_order_gives():
    """routes.STATIC (one lookup) answers like the first matching pattern of routes.ROUTES."""
    from mlfn_runtime import routes

    assert {"/predict", "/run", "/init", "/healthz", "/metrics", "/"} <= set(routes.STATIC)
    for path in routes.STATIC:
        first = next(r for r in routes.ROUTES if r.regex.fullmatch(path))
        for method in routes.ANY:
            route, params = routes.match(method, path)
            assert params == {} and route.endpoint == first.endpoint
            assert (route is first) == (method in first.methods)  # else the 405 stand-in


def test_the_response_head_is_well_formed_and_head_requests_get_no_body(digits_server, digits):
    host, port = digits_server.split("//")[1].split(":")
    body = json.dumps({"image": b64(digit_png(digits[0][0]))}).encode()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body + b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert len(fields) == len(lines) - 1  # no header twice
    assert fields["Server"] == "mlfn" and fields["Date"].endswith(" GMT") and fields["Content-Type"] == "application/json"
    length = int(fields["Content-Length"])
    assert json.loads(rest[:length])["model"] == "digits"
    head2, after = rest[length:].split(b"\r\n\r\n", 1)
    lines2 = head2.decode("latin-1").split("\r\n")
    assert lines2[0] == "HTTP/1.1 200 OK" and "Connection: close" in lines2
    assert int(dict(line.split(": ", 1) for line in lines2[1:])["Content-Length"]) > 0 and after == b""


LAZY_MODULES = ("mlfn_runtime.cloudevents_route", "mlfn_runtime.oip", "mlfn_runtime.tfserving",
                "mlfn_runtime.openapi", "mlfn_runtime.api_keys", "uuid")
COLD_START = '''
import json, sys, threading, urllib.request
from mlfn_runtime import make_server
srv = make_server(sys.argv[1], "127.0.0.1", 0)
threading.Thread(target=srv.serve_forever, daemon=True).start()
lazy = json.loads(sys.argv[2])
started = [m for m in lazy if m in sys.modules]
url = f"http://127.0.0.1:{srv.port}"
answers = {}
for path in ("/v2/health/ready", "/v1/models/digits", "/openapi.json"):
    with urllib.request.urlopen(url + path) as r:
        answers[path] = r.status
req = urllib.request.Request(url + "/events", data=b'{"instances": [[0]]}', method="POST", headers={
    "ce-specversion": "1.0", "ce-id": "1", "ce-source": "/t", "ce-type": "t", "Content-Type": "application/json"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    answers["/events"] = e.code
print(json.dumps({"started": started, "answers": answers, "after": [m for m in lazy if m in sys.modules]}))
'''


def test_start_up_imports_no_protocol_a_request_has_not_used_yet(digits_dir):
    """A cold start loads /predict, /run and the probes only; the other protocols (and auth's
    key handling) are imported by their first request, which they answer as usual."""
    out = subprocess.run([sys.executable, "-c", COLD_START, str(digits_dir), json.dumps(LAZY_MODULES)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["started"] == []
    assert report["answers"] == {"/v2/health/ready": 200, "/v1/models/digits": 200, "/openapi.json": 200,
                                 "/events": 400}
    assert set(report["after"]) == set(LAZY_MODULES) - {"mlfn_runtime.api_keys"}
