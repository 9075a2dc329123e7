"""CloudEvents 1.0 over HTTP in the function (in-process server), sent and parsed with the
cloudevents SDK: binary and structured mode on POST / and /events, the reply event,
202 without a reply, 400/405, duplicates, and Kafka-feed batches on /predict and /run."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from tests.runtime.conftest import digit_png, make_function_dir, running

UPLOADED = "com.example.image.uploaded"


@pytest.fixture(scope="module")
def server(tmp_path_factory, rt_models):
    d = make_function_dir(tmp_path_factory.mktemp("ce") / "digits", rt_models)
    with running(d) as (url, srv):
        yield url


@pytest.fixture(scope="module")
def pngs(digits):
    x, y = digits
    return [digit_png(x[i].reshape(8, 8)) for i in range(6)], [int(v) for v in y[:6]]


def _reply(r: requests.Response):
    assert r.status_code == 200, r.text
    return ce_http.from_binary_event(ce_http.HTTPMessage(headers=dict(r.headers), body=r.content))


def _post(url, message):
    return requests.post(url, headers=message.headers, data=message.body, timeout=30)


@pytest.mark.parametrize("path", ["/", "/events"])
def test_binary_image_event_gets_a_reply_event(server, pngs, path):
    event = CloudEvent({"type": UPLOADED, "source": "/bucket/a", "datacontenttype": "image/png",
                        "bucketname": "uploads"}, pngs[0][0])
    reply = _reply(_post(server + path, ce_http.to_binary_event(event)))
    assert reply.get_type() == "dev.mlfn.inference.response"
    assert reply.get_source().startswith("/mlfn/digits/")
    assert reply.get_id() != event.get_id()
    assert reply.get_extension("mlfnrequestid") == event.get_id()
    data = reply.get_data()
    data = json.loads(data) if isinstance(data, (bytes, str)) else data
    assert data["model"] == "digits" and data["predictions"][0]["index"] == pngs[1][0]


def test_structured_json_event_decodes_like_predict(server, pngs):
    images = [base64.b64encode(p).decode() for p in pngs[0][:3]]
    event = CloudEvent({"type": UPLOADED, "source": "/s", "datacontenttype": "application/json"}, {"images": images})
    message = ce_http.to_structured_event(event)
    assert message.headers["content-type"].startswith("application/cloudevents+json")
    reply = _reply(_post(server + "/", message))
    plain = requests.post(server + "/predict", json={"images": images}, timeout=30).json()
    data = reply.get_data()
    assert (json.loads(data) if isinstance(data, (bytes, str)) else data) == plain


def test_structured_event_with_base64_image_data(server, pngs):
    envelope = {"specversion": "1.0", "id": "e1", "source": "/s", "type": UPLOADED, "datacontenttype": "image/png",
                "data_base64": base64.b64encode(pngs[0][1]).decode()}
    r = requests.post(server + "/events", data=json.dumps(envelope),
                      headers={"Content-Type": "application/cloudevents+json"}, timeout=30)
    reply = _reply(r)
    assert reply.get_extension("mlfnrequestid") == "e1"


def test_plain_predict_body_on_root_still_works(server, pngs):
    r = requests.post(server + "/", data=pngs[0][0], headers={"Content-Type": "image/png"}, timeout=30)
    assert r.status_code == 200 and "ce-id" not in r.headers
    assert r.json()["predictions"][0]["index"] == pngs[1][0]


def test_duplicate_delivery_is_answered_again(server, pngs):
    event = CloudEvent({"type": UPLOADED, "source": "/dup", "id": "same-id", "datacontenttype": "image/png"}, pngs[0][2])
    message = ce_http.to_binary_event(event)
    first, second = _reply(_post(server + "/", message)), _reply(_post(server + "/", message))
    assert first.get_data() == second.get_data()
    assert first.get_extension("mlfnrequestid") == second.get_extension("mlfnrequestid") == "same-id"
    assert first.get_id() != second.get_id()


@pytest.mark.parametrize("headers,body,needle", [
    ({"ce-specversion": "1.0", "ce-type": "t", "ce-source": "/s", "Content-Type": "application/json"}, b"{}", "ce-id"),
    ({"ce-specversion": "0.3", "ce-id": "1", "ce-type": "t", "ce-source": "/s"}, b"{}", "specversion"),
    ({"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "/s", "Content-Type": "application/json"},
     b"{not json", "not valid JSON"),
    ({"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "/s", "Content-Type": "text/csv"}, b"", "no data"),
    ({"Content-Type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "1"}', "source"),
    ({"Content-Type": "application/cloudevents+json"}, b"[1]", "JSON object"),
    ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", "batched"),
])
def test_unreadable_event_is_400_and_server_keeps_serving(server, pngs, headers, body, needle):
    r = requests.post(server + "/events", headers=headers, data=body, timeout=30)
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    assert requests.post(server + "/", data=pngs[0][0], headers={"Content-Type": "image/png"}, timeout=30).ok


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_non_post_is_405(server, method):
    r = requests.request(method, server + "/events", timeout=30)
    assert r.status_code == 405 and "POST" in r.json()["error"]


def test_reply_false_answers_202_without_body(tmp_path, rt_models, pngs):
    d = make_function_dir(tmp_path / "digits", rt_models, serving={"events": {"reply": False}})
    with running(d) as (url, _):
        event = CloudEvent({"type": UPLOADED, "source": "/s", "datacontenttype": "image/png"}, pngs[0][0])
        r = _post(url + "/", ce_http.to_binary_event(event))
        assert r.status_code == 202 and r.content == b"" and "ce-id" not in r.headers


def _one_by_one(server, images):
    """What /predict answers for each image alone, as one response."""
    preds = [requests.post(server + "/predict", data=p, headers={"Content-Type": "image/png"}, timeout=30)
             .json()["predictions"][0] for p in images]
    return {"model": "digits", "predictions": preds}


def _messages(values):
    return {"messages": [{"topic": "images", "partition": 0, "offset": 10 + i, "key": None, "value": v}
                         for i, v in enumerate(values)]}


def test_kafka_batch_on_predict_one_result_per_message_in_order(server, pngs):
    values = [base64.b64encode(p).decode() for p in pngs[0]]
    values[1] = json.dumps({"image": values[1]})  # the feed without isJSONData: JSON text
    values[2] = {"image": values[2]}  # with isJSONData: an object
    r = requests.post(server + "/predict", json=_messages(values), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == _one_by_one(server, pngs[0])


def test_kafka_batch_on_run_and_bad_message(server, pngs):
    values = [base64.b64encode(p).decode() for p in reversed(pngs[0])]
    init = requests.post(server + "/init", json={"value": {"name": "digits", "main": "main"}}, timeout=30)
    assert init.status_code in (200, 403)
    r = requests.post(server + "/run", json={"value": _messages(values)}, timeout=30)
    assert r.json() == _one_by_one(server, list(reversed(pngs[0])))
    bad = requests.post(server + "/predict", json={"messages": [{"topic": "t", "value": {"instances": [1, 2]}}]},
                        timeout=30)
    assert bad.status_code == 400 and "messages[0].value.instances" in bad.json()["error"]


def test_kafka_batch_larger_than_max_batch_size_is_400(server):
    r = requests.post(server + "/predict", json=_messages([np.zeros((8, 8)).tolist()] * 33), timeout=30)
    assert r.status_code == 400 and "max_batch_size" in r.json()["error"]
