"""Benchmark payload logging: warm p50 of POST /predict with `logging.sink` off vs on,
in the real function image (goal: at most +10% with logging on).

    python bench/events_bench.py --image mlfn/digits:TAG     # an image built by `mlfn build`
    python bench/events_bench.py                              # trains + builds the digits sample first

Two containers of one image run side by side: one without a sink, one with
MLFN_LOGGING_SINK pointing at a collecting sink in this process (on the Docker host
gateway). Requests alternate between them (one PNG per request, one keep-alive
connection each, after a warm-up), so load on the machine hits both alike; then
it checks that the sink received a request and a response event for every logged
request. Prints a table and, with --json, one JSON document. Containers are named
mlfnevbench-*.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_bench import Client, docker, free_port, sample_pngs, wait_ready  # noqa: E402

PREFIX = "mlfnevbench-"


SINK = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
pairs = {}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        pairs.setdefault(self.headers.get("ce-id"), set()).add(self.headers.get("ce-type"))
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        body = json.dumps({"events": sum(map(len, pairs.values())),
                           "complete_pairs": sum(len(v) == 2 for v in pairs.values())}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("0.0.0.0", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def start_sink() -> tuple:
    """(process, port): the sink in its own process (it must not take this process's CPU
    or GIL while requests are timed); GET / says how many events it holds."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def sink_counts(port: int) -> dict:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/")
    return json.loads(c.getresponse().read())


def run_container(image: str, env: dict) -> tuple:
    port = free_port()
    name = PREFIX + uuid.uuid4().hex[:8]
    args = ["run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "-p", f"127.0.0.1:{port}:8080",
            "--add-host", "host.docker.internal:host-gateway"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    docker(*args, image)
    wait_ready(port)
    return name, port


def measure(image: str, requests: int, warmup: int) -> dict:
    sink, sink_port = start_sink()
    containers = []
    try:
        off = run_container(image, {})
        containers.append(off[0])
        on = run_container(image, {"MLFN_LOGGING_SINK": f"http://host.docker.internal:{sink_port}/log"})
        containers.append(on[0])
        body = sample_pngs(1)[0]
        clients = {"off": Client(off[1]), "on": Client(on[1])}
        times: dict = {"off": [], "on": []}
        for i in range(warmup + requests):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            for key in order:
                t0 = time.perf_counter()
                status, _ = clients[key].post("/predict", body, "image/png")
                dt = (time.perf_counter() - t0) * 1000
                if status != 200:
                    raise SystemExit(f"/predict answered {status} with logging {key}")
                if i >= warmup:
                    times[key].append(dt)
        deadline = time.monotonic() + 30
        while sink_counts(sink_port)["events"] < 2 * (warmup + requests) and time.monotonic() < deadline:
            time.sleep(0.2)
        counts = sink_counts(sink_port)
    finally:
        for name in containers:
            docker("rm", "-f", name, check=False)
        sink.terminate()
        sink.wait()
    p50 = {k: statistics.median(v) for k, v in times.items()}
    p90 = {k: statistics.quantiles(v, n=10)[8] for k, v in times.items()}
    return {"requests": requests, "p50_ms": p50, "p90_ms": p90,
            "p50_increase_pct": round(100 * (p50["on"] / p50["off"] - 1), 1),
            "events_received": counts["events"], "complete_pairs": counts["complete_pairs"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", help="function image (default: build the digits sample)")
    p.add_argument("--requests", type=int, default=1000, help="measured requests per side")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    image = a.image
    if not image:
        from runtime_bench import build_digits_image

        image = build_digits_image()
    r = measure(image, a.requests, a.warmup)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"POST /predict, 1 PNG, {r['requests']} requests per side, alternating, image {image}")
    print(f"{'logging':<10}{'p50 ms':>10}{'p90 ms':>10}")
    for key in ("off", "on"):
        print(f"{key:<10}{r['p50_ms'][key]:>10.3f}{r['p90_ms'][key]:>10.3f}")
    print(f"p50 with logging on: {r['p50_increase_pct']:+.1f}% (goal: at most +10%)")
    print(f"sink received {r['events_received']} events, {r['complete_pairs']} complete request/response pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
