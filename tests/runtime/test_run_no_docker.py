"""`mlfn run --no-docker`: the build side stages the function and serves it in-process
through the runtime's public entry point (mlfn_runtime.serve); SIGTERM drains and exits 0."""
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

MLFN = str(Path(sys.executable).with_name("mlfn"))


def test_run_no_docker_serves_the_project_until_sigterm(digits_project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([MLFN, "run", "--no-docker", "--port", str(port), "--config", str(digits_project)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlfn run --no-docker did not get ready"
            time.sleep(0.2)
        image = base64.b64encode((digits_project / "inputs" / "digit-3.png").read_bytes()).decode()
        r = requests.post(url + "/predict", json={"image": image}, timeout=10)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "3"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert f"Serving digits on {url}" in err and "serving function 'digits'" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
