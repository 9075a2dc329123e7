"""Rollouts on Knative: the fake Kubernetes API server of tests/targets/knative, metrics from
the Prometheus test server (checking the PromQL sent), and an ingress test server that
answers each version's tag URL (for the quality gate)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlfn.rollout import (ABORTED, INCONCLUSIVE, PROMOTED, ROLLED_BACK, RolloutSettings, abort, begin, run, start,
                          status)
from tests.rollout.prometheus_server import PrometheusServer
from tests.targets.knative.conftest import NS, api, cfg, kubeconfig, make_lifecycle, version_spec  # noqa: F401


class Ingress:
    """Answers POST /predict for the Host of a version's tag URL (`v2-digits.NS.example.com`):
    a classifier giving each row's argmax, off by one for the versions in `wrong`."""

    def __init__(self):
        self.wrong: set = set()
        ingress = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                tag = self.headers.get("Host", "").split("-", 1)[0]
                shift = 1 if tag in ingress.wrong else 0
                preds = [{"index": (row.index(max(row)) + shift) % len(row)} for row in body["instances"]]
                data = json.dumps({"predictions": preds}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prom():
    server = PrometheusServer()
    yield server
    server.close()


@pytest.fixture
def ingress():
    server = Ingress()
    yield server
    server.close()


@pytest.fixture
def knative(make_lifecycle, ingress):
    """A Knative target with digits v1 (default alias 100%) and v2; a fresh one per call."""
    lifecycle = make_lifecycle(host=ingress.address)
    lifecycle.publish(version_spec(1))
    lifecycle.publish(version_spec(2))
    return lambda: make_lifecycle(host=ingress.address).target


def settings(prom, **kw) -> RolloutSettings:
    base = dict(steps=[20, 50, 100], interval=0.2, max_error_rate=1.0, max_p99_ms=250.0, min_requests=10,
                failures=2, max_wait=0.6, prometheus=prom.url)
    return RolloutSettings(**{**base, **kw})


def test_healthy_revision_promoted_with_the_default_promql(knative, prom):
    prom.set("digits-v1", requests=200, errors=0, p99_ms=40)
    prom.set("digits-v2", requests=40, errors=0, p99_ms=45)
    result = start(knative(), "digits", "v2", settings(prom), namespace=NS)
    assert result.status == PROMOTED
    assert knative().read("digits").aliases["default"].weights == {"v2": 100}
    assert [c["weight"] for c in result.checks] == [20, 50]
    first = prom.queries[:3]  # candidate first: requests, errors, p99 over the window in whole seconds
    assert first == [
        'sum(increase(revision_app_request_count{namespace_name="mlfn-test",revision_name="digits-v2"}[1s]))',
        'sum(increase(revision_app_request_count{namespace_name="mlfn-test",revision_name="digits-v2",'
        'response_code_class="5xx"}[1s]))',
        'histogram_quantile(0.99, sum by (le) (rate(revision_app_request_latencies_bucket{'
        'namespace_name="mlfn-test",revision_name="digits-v2"}[1s])))',
    ]
    assert any('revision_name="digits-v1"' in q for q in prom.queries)  # stable over the same window
    assert result.checks[0]["values"]["candidate"] == {"requests": 40, "errors": 0, "error_rate": 0.0,
                                                       "p99_ms": 45.0}


def test_failing_revision_rolled_back_on_its_own_error_rate(knative, prom):
    prom.set("digits-v1", requests=1000, errors=0, p99_ms=40)  # the aggregate would be 1.2%: diluted
    prom.set("digits-v2", requests=40, errors=12, p99_ms=45)
    result = start(knative(), "digits", "v2", settings(prom), namespace=NS)
    assert result.status == ROLLED_BACK and result.step == 0
    assert [c["result"] for c in result.checks] == ["fail", "fail"]
    assert result.checks[-1]["values"]["candidate"]["error_rate"] == 30.0
    assert knative().read("digits").aliases["default"].weights == {"v1": 100}


def test_slow_revision_rolled_back_by_p99(knative, prom):
    prom.set("digits-v2", requests=40, errors=0, p99_ms=2500)
    result = start(knative(), "digits", "v2", settings(prom), namespace=NS)
    assert result.status == ROLLED_BACK and "p99 2500ms > 250ms" in result.reason


def test_no_samples_is_inconclusive(knative, prom):
    result = start(knative(), "digits", "v2", settings(prom), namespace=NS)
    assert result.status == INCONCLUSIVE and result.exit_code == 6
    assert knative().read("digits").aliases["default"].weights == {"v1": 100}


def test_user_promql_templates(knative, prom):
    prom.set("digits-v2", requests=40, errors=0, p99_ms=10)
    queries = {"requests": 'sum(rate(my_requests_total{revision_name="{revision}",ns="{namespace}",'
                           'svc="{service}"}[{interval}]))'}
    result = start(knative(), "digits", "v2", settings(prom, steps=[50, 100], queries=queries), namespace=NS)
    assert result.status == PROMOTED
    assert prom.queries[0] == ('sum(rate(my_requests_total{revision_name="digits-v2",ns="mlfn-test",'
                               'svc="digits"}[1s]))')
    assert prom.queries[1].startswith("sum(increase(revision_app_request_count{")  # the defaults for the rest


def test_quality_gate_through_the_tag_urls(knative, prom, ingress, tmp_path):
    import numpy as np

    probe = tmp_path / "probe.npz"
    np.savez(probe, x=np.eye(10)[np.arange(20) % 10], y=np.arange(20) % 10)
    ingress.wrong.add("v2")
    prom.set("digits-v2", requests=40, errors=0, p99_ms=10)
    result = start(knative(), "digits", "v2", settings(prom, probe=str(probe)), namespace=NS)
    assert result.status == ROLLED_BACK and result.step == -1
    assert result.checks[-1]["values"] == {"accuracy": 0.0, "stable_accuracy": 100.0}
    assert knative().read("digits").aliases["default"].weights == {"v1": 100}


def test_state_on_the_service_abort_from_another_machine(knative, prom, api):
    rollout = begin(knative(), "digits", "v2", settings(prom, max_wait=60))
    ann = api.kube.service("digits")["metadata"]["annotations"]["mlfn.dev/rollouts"]
    assert json.loads(ann)["default"][-1]["id"] == rollout.id
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("r", run(knative(), rollout, namespace=NS)))
    worker.start()
    aborted = abort(knative(), "digits", reason="by the test", settle=0.3)
    worker.join(timeout=5)
    assert done["r"].status == ABORTED and done["r"].weights == aborted.weights == {"v1": 100}
    st = status(knative(), "digits")
    assert st.active is None and st.history[-1]["status"] == ABORTED and st.history[-1]["reason"] == "by the test"


def test_hooks_around_each_traffic_increase(knative, prom, tmp_path):
    prom.set("digits-v2", requests=40, errors=0, p99_ms=10)
    log = tmp_path / "hooks.log"
    post = f'echo "$MLFN_ROLLOUT_CANDIDATE $MLFN_ROLLOUT_STEP $MLFN_ROLLOUT_WEIGHT" >> {log}'
    result = start(knative(), "digits", "v2", settings(prom, post_step=post), namespace=NS)
    assert result.status == PROMOTED
    assert log.read_text().splitlines() == ["v2 1 20", "v2 2 50", "v2 3 100"]
    failing = start(knative(), "digits", "v1", settings(prom, pre_step="echo no >&2; exit 3"), namespace=NS)
    assert failing.status == ROLLED_BACK and failing.step == -1
    assert failing.reason == "pre-step hook failed: 'echo no >&2; exit 3' exited with 3: no"
    assert knative().read("digits").aliases["default"].weights == {"v2": 100}


def test_status_lists_the_last_rollouts(knative, prom, kubeconfig):
    from click.testing import CliRunner

    from mlfn.cli import main

    prom.set("digits-v2", requests=40, errors=30)
    start(knative(), "digits", "v2", settings(prom), namespace=NS)
    r = CliRunner().invoke(main, ["status", "digits", "--target", "knative", "--kubeconfig", kubeconfig])
    assert r.exit_code == 0, r.output
    assert "ROLLOUTS" in r.output and "v2 over v1 on alias 'default': rolled back at" in r.output
    r = CliRunner().invoke(main, ["rollout", "status", "digits", "--target", "knative", "--kubeconfig", kubeconfig,
                                  "-o", "json"])
    doc = json.loads(r.output)
    assert doc["active"] is None and doc["history"][-1]["status"] == ROLLED_BACK
    assert [c["result"] for c in doc["history"][-1]["checks"]] == ["fail", "fail"]


def test_thresholds_against_stable(knative, prom):
    prom.set("digits-v1", requests=100, errors=10, p99_ms=300)  # stable itself fails 10% (bad client input)
    prom.set("digits-v2", requests=40, errors=5, p99_ms=320)  # 12.5%: 2.5 points worse
    own = start(knative(), "digits", "v2", settings(prom, max_error_rate=5.0), namespace=NS)
    assert own.status == ROLLED_BACK and own.reason.endswith("error rate 12.5% > 5%; p99 320ms > 250ms")
    relative = start(knative(), "digits", "v2", settings(prom, max_error_rate=5.0, compare_stable=True),
                     namespace=NS)
    assert relative.status == PROMOTED
    prom.set("digits-v2", requests=40, errors=8, p99_ms=320)  # 20%: 10 points worse than stable
    knative_target = knative()
    from mlfn.lifecycle import Lifecycle

    Lifecycle(knative_target).promote("digits", "v1")
    worse = start(knative_target, "digits", "v2", settings(prom, compare_stable=True, max_error_rate=5.0),
                  namespace=NS)
    assert worse.status == ROLLED_BACK and "error rate 20.0% > 5% more than stable's (10.0%)" in worse.reason


def test_killed_then_resumed_from_another_process_and_refusals(knative, prom, kubeconfig):
    import signal
    import subprocess
    import sys
    import time

    from mlfn.errors import NotFoundError, TargetError

    prom.set("digits-v2", requests=40, errors=0, p99_ms=10)
    flags = ["--target", "knative", "--kubeconfig", kubeconfig]
    proc = subprocess.Popen([sys.executable, "-m", "mlfn.cli", "rollout", "digits", "v2", "--steps", "20,50,100",
                             "--interval", "30s", "--min-requests", "10", "--prometheus", prom.url, *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (status(knative(), "digits").active or {}).get("step", -1) < 0:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert knative().read("digits").aliases["default"].weights == {"v1": 80, "v2": 20}
    with pytest.raises(TargetError, match="already has a rollout in progress"):
        begin(knative(), "digits", "v2", settings(prom))
    # the recorded interval is 30s: resume keeps the recorded settings, so shorten the wait by
    # reading the state as another process would and running it with a quicker clock
    from mlfn.lifecycle import Lifecycle
    from mlfn.rollout.api import metrics_for
    from mlfn.rollout.runner import RolloutRun
    from mlfn.rollout.state import RolloutState

    recorded = RolloutState.from_dict(status(knative(), "digits").active)
    assert recorded.step == 0 and recorded.settings["interval"] == 30.0
    target = knative()
    lines = []
    result = RolloutRun(Lifecycle(target), recorded, metrics_for(target, "digits", recorded.rollout_settings(), NS),
                        progress=lines.append, sleep=lambda s: None).run()
    assert lines[0].startswith("Resuming v2 over v1 on alias 'default': step 1/3 (20%)")
    assert result.status == PROMOTED and [c["weight"] for c in result.checks] == [20, 50]
    assert knative().read("digits").aliases["default"].weights == {"v2": 100}
    with pytest.raises(NotFoundError, match="Version v9 of 'digits' does not exist"):
        begin(knative(), "digits", "v9", settings(prom))
