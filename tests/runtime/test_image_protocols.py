"""The REAL digits image in Docker, one protocol at a time (read-only root, /tmp tmpfs,
its own non-root user), plus $PORT and SIGTERM."""
from __future__ import annotations

import base64
import subprocess
import time
import uuid

import numpy as np
import pytest
import requests

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = "mlfnrt-"
INIT = {"value": {"name": "digits", "main": "main", "binary": False,
                  "env": {"__OW_API_HOST": "https://ow:3233", "__OW_NAMESPACE": "guest",
                          "__OW_ACTION_NAME": "/guest/digits", "__OW_ACTION_VERSION": "0.0.1",
                          "__OW_ACTIVATION_ID": "0", "__OW_TRANSACTION_ID": "t0", "__OW_DEADLINE": "1764460000000"}}}
ACT = {"namespace": "guest", "action_name": "/guest/digits", "action_version": "0.0.1", "activation_id": "a1",
       "transaction_id": "t1", "deadline": "1764460060000"}


def _docker(*args, check=True, timeout=60) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


class Container:
    def __init__(self, image: str, *run_args: str, port: int = 8080):
        self.name = PREFIX + uuid.uuid4().hex[:10]
        _docker("run", "-d", "--name", self.name, "--read-only", "--tmpfs", "/tmp", "-p", f"127.0.0.1::{port}",
                *run_args, image)
        hostport = _docker("port", self.name, f"{port}/tcp").splitlines()[0].rsplit(":", 1)[1]
        self.url = f"http://127.0.0.1:{hostport}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                logs = self.logs()
                self.remove()  # the fixture never yields: clean up here
                raise RuntimeError(f"{self.name} did not become ready:\n{logs}")
            time.sleep(0.05)

    def logs(self) -> tuple:
        r = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=30)
        return r.stdout, r.stderr

    def exec(self, code: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", self.name, "python3", "-c", code], capture_output=True, text=True, timeout=30)

    def remove(self):
        _docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def image(digits_image):
    return digits_image.image


@pytest.fixture(scope="module")
def container(image):
    # Knative's variables (for the metrics labels) turn /init and /run off by default; this
    # container serves both protocols, so it says so (test_image_hardening checks the default)
    c = Container(image, "-e", "K_SERVICE=digits", "-e", "K_REVISION=digits-00001", "-e", "MLFN_SERVING_OPENWHISK=true")
    yield c
    c.remove()


@pytest.fixture(scope="module")
def samples(validation_digits):
    from tests.runtime.conftest import digit_png

    x, y = validation_digits
    return [digit_png(x[i]) for i in range(8)], [int(v) for v in y[:8]]


def test_openwhisk_init_run_and_log_sentinels(container, samples):
    pngs, labels = samples
    r = requests.post(container.url + "/init", json=INIT, timeout=10)
    assert r.status_code == 200
    ok = 0
    for png, label in zip(pngs, labels):
        r = requests.post(container.url + "/run", json={"value": {"image": base64.b64encode(png).decode()}, **ACT}, timeout=10)
        assert r.status_code == 200
        ok += r.json()["predictions"][0]["label"] == str(label)
    assert ok >= 6
    r = requests.post(container.url + "/run", json={"value": {"image": "bm9wZQ=="}, **ACT}, timeout=10)
    assert r.status_code == 200 and "error" in r.json()  # application error
    assert requests.post(container.url + "/init", json=INIT, timeout=10).status_code == 403
    out, err = container.logs()
    assert out.count("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX") >= 10
    assert err.count("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX") >= 10


def test_predict_json_raw_and_bad_input(container, samples):
    pngs, labels = samples
    r = requests.post(container.url + "/predict", data=pngs[0], headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 200 and r.json()["model"] == "digits"
    r = requests.post(container.url + "/predict", json={"images": [base64.b64encode(p).decode() for p in pngs]}, timeout=10)
    got = [p["label"] for p in r.json()["predictions"]]
    assert sum(g == str(y) for g, y in zip(got, labels)) >= 6
    r = requests.post(container.url + "/predict", data=b"{oops", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = requests.post(container.url + "/predict", data=b"x" * 1_100_000, headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 413


def test_open_inference_protocol_with_tritonclient(container, samples):
    import tritonclient.http as httpclient

    pngs, labels = samples
    client = httpclient.InferenceServerClient(container.url.split("//")[1])
    assert client.is_server_ready() and client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    name = meta["inputs"][0]["name"]
    inp = httpclient.InferInput(name, [len(pngs)], "BYTES")
    inp.set_data_from_numpy(np.array(pngs, dtype=np.object_))
    out_name = meta["outputs"][0]["name"]
    scores = client.infer("digits", [inp]).as_numpy(out_name)
    assert scores.shape[0] == len(pngs) and sum(int(a) == b for a, b in zip(scores.argmax(1), labels)) >= 6


def test_tf_serving_rest(container, samples):
    pngs, labels = samples
    base = container.url + "/v1/models/digits"
    assert requests.get(base, timeout=5).json()["model_version_status"][0]["state"] == "AVAILABLE"
    r = requests.post(base + ":predict", json={"instances": [{"b64": base64.b64encode(p).decode()} for p in pngs]}, timeout=10)
    preds = np.array(r.json()["predictions"])
    assert preds.shape[0] == len(pngs) and sum(int(a) == b for a, b in zip(preds.argmax(1), labels)) >= 6


def test_metrics_carry_knative_labels(container):
    requests.get(container.url + "/healthz", timeout=5)
    text = requests.get(container.url + "/metrics", timeout=5).text
    assert 'mlfn_model_load_seconds{service="digits",revision="digits-00001",model="digits"}' in text
    assert "mlfn_startup_seconds" in text and "mlfn_cold_starts_total" in text
    _, err = container.logs()
    assert "mlfn_runtime [digits/digits-00001]: serving function 'digits'" in err


def test_server_runs_non_root_on_a_read_only_root(container):
    """The container runs with --read-only --tmpfs /tmp (see Container): the server started,
    so nothing it needs writes outside /tmp; its process (pid 1) is not root."""
    r = container.exec(
        "import os\n"
        "print([l.split()[1] for l in open('/proc/1/status') if l.startswith('Uid:')][0])\n"
        "try:\n    open('/opt/mlfn/x', 'w')\nexcept OSError as e:\n    print('read-only', e.errno)\n"
        "open('/tmp/ok', 'w').write('1')\n"
    )
    uid, ro = r.stdout.split("\n")[:2]
    assert uid != "0" and ro.startswith("read-only"), r.stderr


def test_port_env_and_sigterm_exits_zero(image):
    c = Container(image, "-e", "PORT=9090", port=9090)
    try:
        assert requests.get(c.url + "/v2/health/ready", timeout=5).status_code == 200
        t0 = time.monotonic()
        _docker("stop", "-t", "20", c.name, timeout=40)
        assert time.monotonic() - t0 < 10  # SIGTERM handled, not the SIGKILL after 20 s
        assert _docker("inspect", "-f", "{{.State.ExitCode}}", c.name) == "0"
        _, err = c.logs()
        assert "received SIGTERM" in err and "stopped" in err
    finally:
        c.remove()
