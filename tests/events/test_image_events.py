"""CloudEvents and payload logging in the REAL function image in Docker: the cloudevents
SDK sends binary and structured events and parses the reply event; the image's payload
log reaches a sink on the host."""
from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from tests.events.conftest import Sink
from tests.runtime.test_image_protocols import Container

pytestmark = [pytest.mark.docker, pytest.mark.slow]
UPLOADED = "com.example.image.uploaded"


@pytest.fixture(scope="module")
def png(validation_png):
    return validation_png


@pytest.fixture(scope="module")
def sink():
    s = Sink(host="0.0.0.0")
    yield s
    s.kill()


@pytest.fixture(scope="module")
def container(digits_image, sink):
    port = sink.url.split(":")[2].split("/")[0]
    c = Container(digits_image.image, "-e", "MLFN_VERSION=v7", "--add-host", "host.docker.internal:host-gateway",
                  "-e", f"MLFN_LOGGING_SINK=http://host.docker.internal:{port}/log")
    yield c
    c.remove()


def _reply(r):
    assert r.status_code == 200, r.text
    return ce_http.from_binary_event(ce_http.HTTPMessage(headers=dict(r.headers), body=r.content))


def _data(event):
    data = event.get_data()
    return json.loads(data) if isinstance(data, (bytes, str)) else data


def test_binary_event_to_the_real_image(container, png):
    plain = requests.post(container.url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=30).json()
    event = CloudEvent({"type": UPLOADED, "source": "/bucket/uploads", "datacontenttype": "image/png"}, png)
    message = ce_http.to_binary_event(event)
    reply = _reply(requests.post(container.url + "/", headers=message.headers, data=message.body, timeout=30))
    assert reply.get_type() == "dev.mlfn.inference.response"
    assert reply.get_source() == "/mlfn/digits/v7"
    assert reply.get_extension("mlfnrequestid") == event.get_id() and reply.get_id() != event.get_id()
    assert _data(reply) == plain


def test_structured_event_to_the_real_image(container, png):
    event = CloudEvent({"type": UPLOADED, "source": "/s", "datacontenttype": "application/json"},
                       {"image": base64.b64encode(png).decode()})
    message = ce_http.to_structured_event(event)
    reply = _reply(requests.post(container.url + "/events", headers=message.headers, data=message.body, timeout=30))
    assert _data(reply)["model"] == "digits" and reply.get_extension("mlfnrequestid") == event.get_id()
    bad = requests.post(container.url + "/events", data=b'{"specversion": "1.0"}',
                        headers={"Content-Type": "application/cloudevents+json"}, timeout=30)
    assert bad.status_code == 400 and "id" in bad.json()["error"]
    assert requests.get(container.url + "/events", timeout=30).status_code == 405
    assert requests.get(container.url + "/healthz", timeout=30).status_code == 200


def test_the_real_image_logs_payloads_to_the_sink(container, png, sink):
    r = requests.post(container.url + "/predict", data=png, headers={"Content-Type": "image/png", "X-Request-Id": "img-1"},
                      timeout=30)
    assert r.ok
    deadline = time.monotonic() + 20
    while len([h for h, _ in sink.received() if h["ce-id"] == "img-1"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    got = {h["ce-type"]: (h, b) for h, b in sink.received() if h["ce-id"] == "img-1"}
    assert got["org.kubeflow.serving.inference.request"][1] == png
    assert json.loads(got["org.kubeflow.serving.inference.response"][1]) == r.json()
    assert got["org.kubeflow.serving.inference.response"][0]["ce-mlfnversion"] == "v7"
