"""A function folder served by `python -m mlfn_runtime` in a subprocess on loopback, so
the benchmark's clients do not share its GIL."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def serve(fdir: Path) -> tuple:
    """(process, port) once `GET /v2/health/ready` answers 200. MLFN_SERVING_* overrides of
    the caller's environment are not passed on: the folder's function.json decides."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFN_SERVING_")}
    env["PYTHONPATH"] = str(ROOT / "actions")
    proc = subprocess.Popen([sys.executable, "-m", "mlfn_runtime", "--function-dir", str(fdir), "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the function did not start")
