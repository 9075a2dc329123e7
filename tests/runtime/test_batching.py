"""Server-side batching (mlfn_runtime.batching, serving.batching) with the real LiteRT:
concurrent requests share interpreter calls, each gets exactly its unbatched answer, a bad
input fails alone, a lone request does not wait while a request in flight elsewhere is
waited for and joins, and every protocol goes through the one batcher.

Coalescing is made deterministic by holding requests in flight (`RequestsInFlight.start`,
as the server does when it admits one) before any of them reaches the batcher."""
from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest
import requests

from mlfn_runtime.batching import Batcher, BatchSettings, stack_key
from mlfn_runtime.errors import ConfigurationError, InvalidInput
from mlfn_runtime.function import load_function
from mlfn_runtime.in_flight import RequestsInFlight
from mlfn_runtime.interpreter import ModelRunner
from mlfn_runtime.serving import Serving

from tests.grpc import grpc_helpers

from .conftest import DIGITS_PRE, b64, digit_png, make_function_dir, running

# a custom last pre-processing step that turns an all-black image into NaNs: the request
# passes every check before the batcher, and the interpreter refuses it inside a shared call
NAN_STEP = "import numpy as np\n\ndef black_is_nan(x):\n    return x * np.nan if not np.any(x) else x\n"
# a custom last pre-processing step that takes half a second for an all-black image
SLOW_STEP = ("import time\nimport numpy as np\n\ndef black_is_slow(x):\n"
             "    if not np.any(x):\n        time.sleep(0.5)\n    return x\n")


def batching_dir(root, rt_models, batch=4, latency_ms=1000.0, workers=16, pre=None, enabled=True):
    return make_function_dir(root, rt_models, models=[
        {"name": "digits", "file": "digits_int8.tflite", "pre": pre or DIGITS_PRE, "post": []}],
        serving={"workers": workers, "interpreter": "per-thread",
                 "batching": {"enabled": enabled, "max_batch_size": batch, "max_latency_ms": latency_ms}})


def concurrently(calls: list, in_flight: RequestsInFlight = None) -> tuple:
    """(results or exceptions in order, seconds) of running every call in its own thread at once;
    with `in_flight`, every call is admitted there (as a server admits a request) before any starts."""
    out = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i):
        if in_flight is not None:
            in_flight.start()
        start.wait()
        try:
            out[i] = calls[i]()
        except Exception as e:  # kept to assert on
            out[i] = e
        finally:
            if in_flight is not None:
                in_flight.finish()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out, time.perf_counter() - t0


def batch_metrics(url: str) -> dict:
    """{"calls", "rows", "requests", "retries"} of model digits from /metrics."""
    text = requests.get(url + "/metrics", timeout=10).text
    got = dict(re.findall(r'^mlfn_batch_(rows_count|rows_sum|requests_total|retries_total)\{[^}]*model="digits"[^}]*\} '
                          r'(\S+)$', text, re.M))
    return {"calls": int(got["rows_count"]), "rows": int(got["rows_sum"]), "requests": int(got["requests_total"]),
            "retries": int(got["retries_total"])}


@pytest.fixture(scope="module")
def reference(rt_models, digits):
    """(inputs 16x8x8x1 float32, their logits from one unbatched call each)."""
    x = digits[0][:16, :, :, None].astype(np.float32)
    runner = ModelRunner(str(rt_models / "digits_int8.tflite"))
    return x, [runner.predict(x[i:i + 1])["output_0"] for i in range(len(x))]


def test_concurrent_requests_share_calls_and_get_their_unbatched_answers(tmp_path, rt_models, reference):
    x, expected = reference
    fn = load_function(batching_dir(tmp_path / "fn", rt_models, batch=4, latency_ms=1000))
    results, seconds = concurrently([lambda i=i: fn.infer("digits", {"pixels": x[i:i + 1]}) for i in range(16)],
                                    fn.in_flight)
    stats = fn.models["digits"].batcher.stats
    assert stats.requests == 16 and stats.calls == 4 and stats.rows == 16  # 16 requests, 4 full calls
    assert stats.row_counts[2] == 4  # every call in the le=4 bucket
    for got, want in zip(results, expected):
        assert np.array_equal(got["output_0"], want)  # int8 model: bit-identical to its own unbatched call
    assert seconds < 1.0  # full groups flush at once, without waiting out the 1000 ms window


def test_a_lone_request_does_not_wait_for_its_window(tmp_path, rt_models, digits):
    x, y = digits
    fdir = batching_dir(tmp_path / "fn", rt_models, batch=8, latency_ms=1000)
    with running(fdir) as (url, _):
        before = batch_metrics(url)
        for i in range(3):
            t0 = time.perf_counter()
            r = requests.post(url + "/predict", data=digit_png(x[i]), headers={"Content-Type": "image/png"}, timeout=30)
            assert r.status_code == 200 and int(np.argmax(r.json()["predictions"][0])) == y[i]
            assert time.perf_counter() - t0 < 0.5  # nobody else in flight: it ran at once, not after 1000 ms
        after = batch_metrics(url)
    assert after["calls"] - before["calls"] == 3 and after["requests"] - before["requests"] == 3


def test_a_leader_waits_for_a_request_in_flight_elsewhere_and_it_joins(tmp_path, rt_models, digits):
    x, y = digits
    pre = DIGITS_PRE + [{"custom": {"file": "pre.py", "function": "black_is_slow"}}]
    fdir = batching_dir(tmp_path / "fn", rt_models, batch=8, latency_ms=1000, pre=pre)
    (fdir / "pre.py").write_text(SLOW_STEP)
    black = digit_png(np.zeros((8, 8)))
    with running(fdir) as (url, srv):
        def post(body):
            return requests.post(url + "/predict", data=body, headers={"Content-Type": "image/png"}, timeout=30)

        alone = post(black).json()["predictions"][0]
        before = batch_metrics(url)
        slow = {}
        sender = threading.Thread(target=lambda: slow.update(r=post(black)))
        end = time.monotonic() + 10
        while srv.state.metrics.inflight > 0:  # the requests above are done
            assert time.monotonic() < end
            time.sleep(0.01)
        sender.start()
        while srv.state.metrics.inflight < 1:  # the slow request is admitted, in its half-second pre-processing
            assert time.monotonic() < end
            time.sleep(0.01)
        fast = post(digit_png(x[0]))  # reaches the batcher first and waits for the slow one
        sender.join(30)
        after = batch_metrics(url)
    assert fast.status_code == 200 and int(np.argmax(fast.json()["predictions"][0])) == y[0]
    assert slow["r"].status_code == 200 and slow["r"].json()["predictions"][0] == alone
    assert after["calls"] - before["calls"] == 1 and after["requests"] - before["requests"] == 2  # it joined


def test_a_group_stops_waiting_once_every_worker_slot_is_in_it(tmp_path, rt_models, reference):
    x, expected = reference
    fn = load_function(batching_dir(tmp_path / "fn", rt_models, batch=32, latency_ms=1000, workers=4))
    fn.in_flight.start()  # a fifth request in flight, which waits for a worker slot: it cannot come
    results, seconds = concurrently([lambda i=i: fn.infer("digits", {"pixels": x[i:i + 1]}) for i in range(4)],
                                    fn.in_flight)
    fn.in_flight.finish()
    assert [np.array_equal(r["output_0"], e) for r, e in zip(results, expected)] == [True] * 4
    assert fn.models["digits"].batcher.stats.calls == 1 and seconds < 1.0  # no wait for the window


def test_inputs_that_cannot_stack_go_in_separate_groups_and_big_requests_alone(rt_models, reference):
    x, expected = reference
    runner = ModelRunner(str(rt_models / "digits_int8.tflite"), mode="per-thread", max_interpreters=2)
    in_flight = RequestsInFlight()
    batcher = Batcher(runner, BatchSettings(enabled=True, max_batch_size=4, max_latency_ms=1000), max_requests=16,
                      in_flight=in_flight)
    quantized = [runner.predict(x[i:i + 1].astype(np.float32)) for i in range(4)]  # int8 inputs pass unchanged
    as_int8 = [np.clip(np.rint(x[i:i + 1] / runner.inputs[0].scale) + runner.inputs[0].zero_point, -128, 127)
               .astype(np.int8) for i in range(4)]
    assert stack_key(x[:1])[0] != stack_key(as_int8[0])[0] and stack_key(x[:3])[1] == 3
    calls = [lambda i=i: batcher.predict(x[i:i + 1]) for i in range(4)]
    calls += [lambda i=i: batcher.predict(as_int8[i]) for i in range(4)]
    calls += [lambda: batcher.predict(x[:6])]  # more rows than max_batch_size: alone
    results, _ = concurrently(calls, in_flight)
    for i in range(4):
        assert np.array_equal(results[i]["output_0"], expected[i])
        assert np.allclose(results[4 + i]["output_0"], quantized[i]["output_0"])
    assert np.array_equal(results[8]["output_0"], np.concatenate(expected[:6]))
    assert batcher.stats.calls == 3 and batcher.stats.requests == 9  # float32 group, int8 group, the 6 rows
    assert batcher.stats.row_counts[3] == 1  # the 6-row call (le=8 bucket)


def test_over_http_a_bad_input_fails_alone_and_the_shared_call_is_retried(tmp_path, rt_models, digits):
    x, y = digits
    pre = DIGITS_PRE + [{"custom": {"file": "pre.py", "function": "black_is_nan"}}]
    fdir = batching_dir(tmp_path / "fn", rt_models, batch=6, latency_ms=1000, workers=8, pre=pre)
    (fdir / "pre.py").write_text(NAN_STEP)
    black = digit_png(np.zeros((8, 8)))
    bodies = [digit_png(x[i]) for i in range(4)] + [black, b"not an image at all"]
    with running(fdir) as (url, srv):
        def post(body):
            return requests.post(url + "/predict", data=body, headers={"Content-Type": "image/png"}, timeout=30)

        alone = [post(b).json()["predictions"][0] for b in bodies[:4]]
        before = batch_metrics(url)
        srv.state.metrics.in_flight.start()  # another request in flight: the group waits its window for it
        results, _ = concurrently([lambda b=b: post(b) for b in bodies])
        srv.state.metrics.in_flight.finish()
        after = batch_metrics(url)
    assert [r.status_code for r in results] == [200] * 4 + [400, 400]
    assert [r.json()["predictions"][0] for r in results[:4]] == alone
    assert [int(np.argmax(p)) for p in alone] == list(y[:4])
    assert "NaN" in results[4].json()["error"] and "not an image" in results[5].json()["error"]
    # the undecodable body never reached the batcher; the NaN one spoilt one shared call of 5,
    # which ran again request by request: 1 + 5 calls for 5 requests
    assert after["requests"] - before["requests"] == 5 and after["retries"] - before["retries"] == 1
    assert after["calls"] - before["calls"] == 5


def test_every_protocol_goes_through_the_batcher(tmp_path, rt_models, digits, reference):
    x8, y = digits
    x, expected = reference
    fdir = batching_dir(tmp_path / "fn", rt_models, batch=4, latency_ms=1000, workers=8)
    pngs = [b64(digit_png(x8[i])) for i in range(4)]
    with running(fdir) as (url, srv):
        target = url.removeprefix("http://")

        def oip(i):
            doc = {"inputs": [{"name": "pixels", "shape": [1, 8, 8, 1], "datatype": "FP32",
                               "data": x[i].reshape(-1).tolist()}]}
            r = requests.post(url + "/v2/models/digits/infer", json=doc, timeout=30)
            return np.array(r.json()["outputs"][0]["data"], np.float32)

        def tfs(i):
            r = requests.post(url + "/v1/models/digits:predict", json={"instances": [x[i].tolist()]}, timeout=30)
            return np.array(r.json()["predictions"][0], np.float32)

        def grpc(i):
            req = grpc_helpers.message("ModelInferRequest", model_name="digits", inputs=[
                {"name": "pixels", "datatype": "FP32", "shape": [1, 8, 8, 1]}], raw_input_contents=[x[i].tobytes()])
            return np.frombuffer(grpc_helpers.call(target, "ModelInfer", req).raw_output_contents[0], np.float32)

        def predict(i):
            return requests.post(url + "/predict", json={"image": pngs[i]}, timeout=30).json()["predictions"][0]

        def run(i):
            r = requests.post(url + "/run", json={"value": {"image": pngs[i]}}, timeout=30)
            return r.json()["predictions"][0]

        def event(i):
            headers = {"ce-specversion": "1.0", "ce-id": f"e{i}", "ce-source": "test", "ce-type": "dev.test"}
            return requests.post(url + "/", json={"image": pngs[i]}, headers=headers, timeout=30).json()["predictions"][0]

        init = {"value": {"name": "digits/v1", "main": "main", "binary": False, "env": {}}}
        assert requests.post(url + "/init", json=init, timeout=30).status_code == 200  # OpenWhisk's /init, once
        unbatched = [predict(i) for i in range(4)]  # four lone calls
        srv.state.metrics.in_flight.start()  # another request in flight: groups wait for company until full
        for name, send in (("oip", oip), ("tfserving", tfs), ("grpc", grpc), ("predict", predict),
                           ("run", run), ("cloudevents", event)):
            before = batch_metrics(url)
            results, seconds = concurrently([lambda i=i: send(i) for i in range(4)])
            after = batch_metrics(url)
            assert after["calls"] - before["calls"] == 1 and after["requests"] - before["requests"] == 4, name
            assert seconds < 1.0, name  # the group of 4 was full: no wait for the window
            for i, got in enumerate(results):
                if name in ("oip", "tfserving", "grpc"):
                    assert np.array_equal(np.asarray(got).reshape(1, 10), expected[i]), name
                else:
                    assert got == unbatched[i] and int(np.argmax(got)) == y[i], name
        srv.state.metrics.in_flight.finish()


def test_settings_from_function_json_and_environment():
    s = Serving.from_dict({"batching": {"enabled": True, "max_batch_size": 16, "max_latency_ms": 5}}, environ={})
    assert s.batching == BatchSettings(enabled=True, max_batch_size=16, max_latency_ms=5.0)
    assert Serving.from_dict(None, environ={}).batching == BatchSettings()
    env = {"MLFN_SERVING_BATCHING_ENABLED": "true", "MLFN_SERVING_BATCHING_MAX_LATENCY_MS": "0"}
    s = Serving.from_dict({"batching": {"max_batch_size": 8}}, environ=env)
    assert s.batching == BatchSettings(enabled=True, max_batch_size=8, max_latency_ms=0.0)
    for doc, env, words in (({"max_batch_size": 0}, {}, "serving.batching.max_batch_size in function.json"),
                            ({"max_latency_ms": 5000}, {}, "serving.batching.max_latency_ms in function.json"),
                            ({}, {"MLFN_SERVING_BATCHING_MAX_LATENCY_MS": "-1"},
                             "serving.batching.max_latency_ms (MLFN_SERVING_BATCHING_MAX_LATENCY_MS) must be"),
                            ({"enabled": "yes"}, {}, "serving.batching.enabled in function.json"),
                            ([1], {}, "serving.batching in function.json must be a mapping"),
                            ({}, {"MLFN_SERVING_BATCHING_MAX_BATCH_SIZE": "many"}, "MLFN_SERVING_BATCHING_MAX_BATCH_SIZE")):
        with pytest.raises(ConfigurationError, match=re.escape(words)):
            Serving.from_dict({"batching": doc}, environ=env)


def test_batching_off_is_the_plain_runner_and_adds_no_metrics(tmp_path, rt_models, reference):
    x, expected = reference
    fdir = batching_dir(tmp_path / "fn", rt_models, enabled=False)
    fn = load_function(fdir)
    results, _ = concurrently([lambda i=i: fn.infer("digits", {"pixels": x[i:i + 1]}) for i in range(8)])
    assert all(np.array_equal(r["output_0"], e) for r, e in zip(results, expected))
    assert fn.models["digits"].batcher.stats.calls == 0
    with running(fdir) as (url, _):
        assert "mlfn_batch_" not in requests.get(url + "/metrics", timeout=10).text
    with pytest.raises(InvalidInput):  # the runner's own errors come through unchanged
        fn.models["digits"].batcher.predict(np.zeros((1, 3, 3, 1), np.float32))
    assert json.loads((fdir / "function.json").read_text())["serving"]["batching"]["enabled"] is False


def test_sigterm_drain_answers_a_request_waiting_in_its_batch_window(tmp_path, rt_models, digits):
    import signal

    from .test_drain import runtime_process

    pre = DIGITS_PRE + [{"custom": {"file": "pre.py", "function": "black_is_slow"}}]
    fdir = batching_dir(tmp_path / "fn", rt_models, enabled=False, pre=pre)  # switched on by the environment below
    (fdir / "pre.py").write_text(SLOW_STEP)
    png, black = digit_png(digits[0][0]), digit_png(np.zeros((8, 8)))
    with runtime_process(fdir, batching_enabled="true", batching_max_latency_ms=800) as (proc, url, _):
        answers = {}

        def send(name, body):
            answers[name] = requests.post(url + "/predict", data=body, headers={"Content-Type": "image/png"}, timeout=30)

        senders = [threading.Thread(target=send, args=("slow", black)), threading.Thread(target=send, args=("r", png))]
        senders[0].start()
        time.sleep(0.1)  # the black image is in its half-second pre-processing
        senders[1].start()
        time.sleep(0.2)  # the other request now waits in its 800 ms window for the black one
        proc.send_signal(signal.SIGTERM)
        for t in senders:
            t.join(30)
        assert proc.wait(10) == 0
    assert answers["r"].status_code == 200 and int(np.argmax(answers["r"].json()["predictions"][0])) == digits[1][0]
    assert answers["slow"].status_code == 200
