"""Payload logging: every sampled request and its response arrive at the sink once as
CloudEvents (KServe's logger types), ids pair up, under 8 concurrent clients; a dead sink
never fails a request and the drops are counted in /metrics; metadata mode; sampling."""
from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlfn_runtime.payload_log import REQUEST_TYPE, RESPONSE_TYPE
from tests.runtime.conftest import digit_png, make_function_dir, running


def _png(digits, i=0):
    return digit_png(digits[0][i].reshape(8, 8))


def _function(tmp_path, rt_models, sink_url, **logging):
    d = make_function_dir(tmp_path / "digits", rt_models)
    spec = json.loads((d / "function.json").read_text())
    spec["logging"] = {"sink": sink_url, **logging}
    (d / "function.json").write_text(json.dumps(spec))
    return d


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _metric(url, name) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1


def test_every_request_and_response_arrive_once_under_8_clients(tmp_path, rt_models, digits, sink):
    png = _png(digits)
    with running(_function(tmp_path, rt_models, sink.url)) as (url, _):
        def call(i):
            r = requests.post(url + "/predict", data=png, headers={"Content-Type": "image/png",
                                                                     "X-Request-Id": f"req-{i}"}, timeout=30)
            assert r.status_code == 200
            return r.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(80)))
        assert _wait(lambda: len(sink.received()) >= 160)
        time.sleep(0.3)
        events = sink.received()
        assert len(events) == 160
        by_id: dict = {}
        for headers, body in events:
            assert headers["ce-specversion"] == "1.0"
            assert headers["ce-mlfnfunction"] == "digits" and headers["ce-mlfnendpoint"] == "predict"
            assert headers["ce-mlfnversion"]
            by_id.setdefault(headers["ce-id"], {})[headers["ce-type"]] = (headers, body)
        assert sorted(by_id) == sorted(f"req-{i}" for i in range(80))
        for pair in by_id.values():
            assert set(pair) == {REQUEST_TYPE, RESPONSE_TYPE}
            assert pair[REQUEST_TYPE][1] == png and pair[REQUEST_TYPE][0]["content-type"] == "image/png"
            assert json.loads(pair[RESPONSE_TYPE][1]) == results[0]
        assert _metric(url, "mlfn_payload_events_sent_total") == 160
        assert _metric(url, "mlfn_payload_events_dropped_total") == 0


def test_killed_sink_never_fails_requests_and_drops_are_counted(tmp_path, rt_models, digits, sink):
    png = _png(digits)
    with running(_function(tmp_path, rt_models, sink.url)) as (url, _):
        for _ in range(5):
            assert requests.post(url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=30).ok
        assert _wait(lambda: len(sink.received()) == 10)
        sink.kill()
        t0 = time.monotonic()
        for _ in range(10):
            r = requests.post(url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=30)
            assert r.status_code == 200 and r.json()["predictions"]
        assert time.monotonic() - t0 < 5  # retries happen off the request path
        assert _wait(lambda: _metric(url, "mlfn_payload_events_dropped_total") == 20, timeout=60)
        assert _metric(url, "mlfn_payload_events_sent_total") == 10
        assert len(sink.received()) == 10


def test_metadata_mode_sends_image_shape_not_pixels(tmp_path, rt_models, digits, sink):
    png = digit_png(digits[0][0].reshape(8, 8), size=(32, 24))
    d = _function(tmp_path, rt_models, sink.url, payload="metadata")
    with running(d) as (url, _):
        body = {"images": [base64.b64encode(png).decode()] * 2}
        r = requests.post(url + "/predict", json=body, headers={"X-Request-Id": "m1"}, timeout=30)
        assert r.ok
        assert _wait(lambda: len(sink.received()) == 2)
        events = {h["ce-type"]: (h, b) for h, b in sink.received()}
        meta = json.loads(events[REQUEST_TYPE][1])
        assert meta["content_type"] == "application/json" and meta["bytes"] == len(json.dumps(body))
        assert meta["images"] == [{"format": "PNG", "width": 32, "height": 24, "mode": "L", "bytes": len(png)}] * 2
        assert json.loads(events[RESPONSE_TYPE][1]) == r.json()


def test_sample_rate_zero_sends_nothing_and_events_route_uses_event_id(tmp_path, rt_models, digits, sink):
    png = _png(digits)
    with running(_function(tmp_path, rt_models, sink.url, sample_rate=0.0)) as (url, _):
        assert requests.post(url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=30).ok
        time.sleep(0.5)
        assert sink.received() == []
    with running(_function(tmp_path / "b", rt_models, sink.url)) as (url, _):
        headers = {"ce-specversion": "1.0", "ce-id": "evt-7", "ce-source": "/s", "ce-type": "t", "Content-Type": "image/png"}
        assert requests.post(url + "/events", data=png, headers=headers, timeout=30).ok
        assert _wait(lambda: len(sink.received()) == 2)
        assert {h["ce-id"] for h, _ in sink.received()} == {"evt-7"}
        assert {h["ce-mlfnendpoint"] for h, _ in sink.received()} == {"events"}
        structured = {"specversion": "1.0", "id": "evt-8", "source": "/s", "type": "t", "datacontenttype": "image/png",
                      "data_base64": base64.b64encode(png).decode()}
        assert requests.post(url + "/", data=json.dumps(structured), timeout=30,
                             headers={"Content-Type": "application/cloudevents+json"}).ok
        assert _wait(lambda: len(sink.received()) == 4)
        assert [h["ce-id"] for h, _ in sink.received()[2:]] == ["evt-8", "evt-8"]


@pytest.mark.parametrize("logging,needle", [({"sink": "ftp://x"}, "logging.sink"),
                                            ({"sink": "http://x", "sample_rate": 2}, "sample_rate"),
                                            ({"sink": "http://x", "payload": "some"}, "logging.payload")])
def test_bad_logging_settings_fail_at_start(tmp_path, rt_models, logging, needle):
    from mlfn_runtime import make_server
    from mlfn_runtime.errors import ConfigurationError

    d = make_function_dir(tmp_path / "digits", rt_models)
    spec = json.loads((d / "function.json").read_text())
    spec["logging"] = logging
    (d / "function.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigurationError, match=needle):
        make_server(str(d), "127.0.0.1", 0)
