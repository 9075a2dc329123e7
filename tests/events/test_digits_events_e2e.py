"""The real digits function on the local controller, fed like OpenWhisk's messaging feed
feeds an action: `deploy(triggers=...)` makes the trigger and the rule; firing it with a
Kafka batch runs one activation of the function that answers one prediction per message,
in order."""
from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from mlfn.targets.openwhisk.wskprops import GUEST_AUTH
from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]
INPUTS = ROOT / "samples" / "digits" / "inputs"
AUTH = tuple(GUEST_AUTH.split(":", 1))


def test_a_kafka_batch_through_a_trigger_reaches_the_function(digits_image, digits_project, local_api):
    from mlfn import releases as lib
    from mlfn.config import load_config

    cfg = load_config(str(digits_project)).override({"name": "digits-ev"})
    opts = lib.TargetOptions(target="local", port=local_api.server_address[1])
    out = lib.deploy(cfg, opts, build=digits_image, triggers=("digits-kafka",))
    assert [t.name for t in out.triggers] == ["digits-kafka"]
    labels = ["3", "7", "3"]
    messages = [{"topic": "images", "partition": 0, "offset": i, "key": None,
                 "value": base64.b64encode((INPUTS / f"digit-{d}.png").read_bytes()).decode()}
                for i, d in enumerate(labels)]
    base = f"{local_api.url}/api/v1/namespaces/_"
    r = requests.post(f"{base}/triggers/digits-kafka", json={"messages": messages}, auth=AUTH, timeout=30)
    assert r.status_code == 202, r.text
    trigger_rec = requests.get(f"{base}/activations/{r.json()['activationId']}", auth=AUTH, timeout=30).json()
    aid = json.loads(trigger_rec["logs"][0])["activationId"]
    deadline = time.monotonic() + 120
    while (rec := requests.get(f"{base}/activations/{aid}", auth=AUTH, timeout=30)).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    result = rec.json()["response"]["result"]
    assert [p["label"] for p in result["predictions"]] == labels
    assert [t.name for t in lib.status("digits-ev", opts).triggers] == ["digits-kafka"]
    deleted = lib.delete("digits-ev", options=opts).deleted
    assert deleted[0] == "trigger digits-kafka"
