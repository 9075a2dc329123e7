"""Each OpenWhisk activation sees its own __OW_* variables (mlfn_runtime.activation), also
when several run at once in one container (an action with concurrency > 1)."""
import json
import os
import threading
import time

import requests

from mlfn_runtime import activation

from .conftest import running

OVERLAP = '''
import os, threading, time
from mlfn_runtime import activation

both_running = threading.Barrier(2, timeout=20)

def main(args):
    before = activation.get("ACTIVATION_ID")
    both_running.wait()          # the two activations overlap here
    after = activation.env()["__OW_ACTIVATION_ID"]
    environ = os.environ.get("__OW_ACTIVATION_ID")
    both_running.wait()          # neither has ended before both read
    if before == "act-b":
        time.sleep(0.3)          # the activation that started second ends last
    return {"before": before, "after": after, "deadline": activation.get("DEADLINE"),
            "api_host": activation.get("__OW_API_HOST"), "environ": environ}
'''


def _run(url, activation_id, out):
    body = {"value": {}, "activation_id": activation_id, "deadline": f"deadline-of-{activation_id}",
            "namespace": "guest", "action_name": "/guest/fn"}
    r = requests.post(url + "/run", data=json.dumps(body), timeout=30)
    out[activation_id] = (r.status_code, r.json())


def test_overlapping_activations_each_see_their_own_variables(monkeypatch, code_actions):
    monkeypatch.delenv("__OW_ACTIVATION_ID", raising=False)
    with running(None) as (url, _):
        r = requests.post(url + "/init", json={"value": {"name": "fn", "main": "main", "binary": False,
                                                         "code": OVERLAP, "env": {"__OW_API_HOST": "https://ow", **code_actions}}})
        assert r.status_code == 200, r.text
        out: dict = {}
        threads = [threading.Thread(target=_run, args=(url, aid, out)) for aid in ("act-a", "act-b")]
        threads[0].start()
        time.sleep(0.3)  # act-a runs alone first: it may export to os.environ, act-b then may not
        threads[1].start()
        for t in threads:
            t.join(30)
    environ = {}
    for aid in ("act-a", "act-b"):
        status, body = out[aid]
        assert status == 200, body
        environ[aid] = body.pop("environ")
        assert body == {"before": aid, "after": aid, "deadline": f"deadline-of-{aid}", "api_host": "https://ow"}
    # os.environ kept act-a's id while act-b ran (act-b did not overwrite it) ...
    assert environ["act-a"] == "act-a"
    # ... and is not left holding an activation's id when they end out of order
    assert "__OW_ACTIVATION_ID" not in os.environ


def test_one_activation_at_a_time_also_sees_its_variables_in_os_environ(code_actions):
    code = ("import os\nfrom mlfn_runtime import activation\n"
            "def main(args):\n    return {'env': os.environ.get('__OW_ACTIVATION_ID'), 'view': activation.get('ACTIVATION_ID')}\n")
    with running(None) as (url, _):
        requests.post(url + "/init", json={"value": {"name": "fn", "main": "main", "binary": False, "code": code,
                                                     "env": code_actions}})
        for aid in ("one", "two"):
            r = requests.post(url + "/run", json={"value": {}, "activation_id": aid}, timeout=30)
            assert r.json() == {"env": aid, "view": aid}
    assert activation.env() == {}  # outside an activation the view is empty
