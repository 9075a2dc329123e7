"""Load and soak of a function image under a memory limit (issue 11, "The suite stays").

    python bench/load_soak.py --image mlfn/digits:TAG [--clients 50] [--seconds 60] [--memory 256m]

Starts the image with `docker run --memory M --read-only`, /init once, then CLIENTS threads
each POST /predict (a digit PNG) on kept-alive connections for SECONDS, while memory is
sampled from `docker stats`. Reports requests, errors (anything but 200, or a dropped
connection), p50/p99, and memory at the start, peak and end; exits 1 when any request
failed or the container was OOM-killed. Loopback only; bounded in time.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

PNG = Path(__file__).resolve().parents[1] / "samples" / "digits" / "inputs" / "digit-3.png"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def memory_mib(name: str) -> float:
    used = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).split("/")[0].strip()
    value, unit = float(used[:-3]), used[-3:]
    return value * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def client(port: int, body: bytes, until: float, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            out.append((resp.status, time.perf_counter() - t0))
        except (OSError, http.client.HTTPException):
            out.append((0, time.perf_counter() - t0))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--memory", default="256m")
    a = ap.parse_args()
    name = f"mlfn-soak-{int(time.time())}"
    docker("run", "-d", "--name", name, "--memory", a.memory, "--memory-swap", a.memory, "--read-only",
           "--tmpfs", "/tmp", "-p", "127.0.0.1::8080", a.image)
    try:
        port = int(docker("port", name, "8080/tcp").splitlines()[0].rsplit(":", 1)[1])
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"image": base64.b64encode(PNG.read_bytes()).decode()}).encode()
        start_mib, peak = memory_mib(name), 0.0
        results: list = []
        until = time.monotonic() + a.seconds
        threads = [threading.Thread(target=client, args=(port, body, until, results)) for _ in range(a.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, memory_mib(name))
            time.sleep(1)
        end_mib = memory_mib(name)
        oom = docker("inspect", "-f", "{{.State.OOMKilled}}", name) == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    times = sorted(t for s, t in results if s == 200)
    errors = sum(1 for s, _ in results if s != 200)
    report = {"clients": a.clients, "seconds": a.seconds, "memory_limit": a.memory, "requests": len(results),
              "errors": errors, "oom_killed": oom, "req_per_s": round(len(results) / a.seconds, 1),
              "p50_ms": round(statistics.median(times) * 1000, 2) if times else None,
              "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 2) if times else None,
              "memory_mib": {"start": round(start_mib, 1), "peak": round(peak, 1), "end": round(end_mib, 1)}}
    print(json.dumps(report, indent=2))
    return 1 if errors or oom else 0


if __name__ == "__main__":
    raise SystemExit(main())
