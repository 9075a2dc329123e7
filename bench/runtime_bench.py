"""Benchmark the function runtime in its real image.

    python bench/runtime_bench.py --image mlfn/digits:TAG          # an image built by `mlfn build`
    python bench/runtime_bench.py                                   # trains + builds the digits sample first
    python tests/runtime/make_models.py /tmp/m --bench        # + a compute-heavy model, then:
    python bench/runtime_bench.py --image mlfn/digits:TAG --runner-model /tmp/m/conv.tflite

Measures, on loopback, against the image in Docker:
 (a) cold start: `docker run -d` -> first successful POST /predict to the container's
     address (as the OpenWhisk invoker does), vs. `docker run` of the same base image running
     `python3 -c pass` to its exit (the floor), interleaved, median of --cold-runs; plus the
     same comparison inside one container (`python3 -m mlfn_runtime` vs `python3 -c pass`),
     which leaves Docker out;
 (b) warm latency p50/p99 of POST /predict for 1, 8 and 32 images per request;
 (c) requests/s with 8 concurrent keep-alive clients, for serving.interpreter=lock and
     per-thread (MLFN_SERVING_INTERPRETER), plus the same comparison in-process on the
     model runner alone (no HTTP, no client overhead);
 (d) peak memory of the container (cgroup v1 memory.max_usage_in_bytes, or cgroup v2
     memory.peak), after all of the above.
Prints a table and, with --json, one JSON document. Containers are named mlfnrtbench-*.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "mlfnrtbench-"


def docker(*args, check=True, timeout=120) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:3])}...: {r.stderr.strip()}")
    return r.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_digits_image() -> str:
    """Train the digits sample into a temp dir and build its image (like tests/fixtures_build.py)."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    from tests.fixtures_model import _train_module, copy_sample
    from mlfn.image import build_image
    from mlfn.config import load_config

    project = copy_sample(Path(tempfile.mkdtemp(prefix="mlfnrtbench-")) / "digits")
    _train_module().train(project, seed=0)
    return build_image(load_config(str(project)), builder="docker").image


def sample_pngs(n: int = 32) -> list:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray((d.images[i] * 255 / 16).round().astype("uint8"), "L").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, ctype="application/json") -> tuple:
        self.conn.request("POST", path, body, {"Content-Type": ctype})
        r = self.conn.getresponse()
        return r.status, r.read()


def start(image: str, env: dict | None = None, port: int | None = None) -> tuple:
    port = port or free_port()
    name = PREFIX + uuid.uuid4().hex[:8]
    args = ["run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080"]
    for k, v in (env or {}).items():
        args += ["-e", f"{k}={v}"]
    docker(*args, image)
    wait_ready(port)
    return name, port


def wait_ready(port: int, body: bytes | None = None, timeout=30.0, host: str = "127.0.0.1") -> float:
    """Poll until /healthz (no body) or POST /predict (body) answers 200; returns the time."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            if body is None:
                c.request("GET", "/healthz")
            else:
                c.request("POST", "/predict", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.002)
    raise SystemExit(f"nothing answered on {host}:{port} within {timeout} s")


def cold_start(image: str, base: str, runs: int, body: bytes) -> dict:
    """Median wall time, like the OpenWhisk invoker does it: `docker run -d` (returns once the
    container and its network are up), then POST /predict to the container's address until
    a 200 - vs. `docker run` of the base image running `python3 -c pass` to its exit.
    (Polling through a published port measures docker-proxy instead: SYNs sent before the
    container's interface is up are retransmitted only after 1 s.)"""
    ours, floor, inside = [], [], []
    for _ in range(runs):
        name = PREFIX + uuid.uuid4().hex[:8]
        t0 = time.monotonic()
        docker("run", "--name", name, "--entrypoint", "python3", base, "-c", "pass")
        floor.append(time.monotonic() - t0)
        docker("rm", "-f", name, check=False)
        name = PREFIX + uuid.uuid4().hex[:8]
        t0 = time.monotonic()
        docker("run", "-d", "--name", name, image)
        ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
        t1 = wait_ready(8080, body, host=ip)
        ours.append(t1 - t0)
        c = http.client.HTTPConnection(ip, 8080, timeout=5)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith("mlfn_startup_seconds"):
                inside.append(float(line.rsplit(" ", 1)[1]))
        docker("rm", "-f", name, check=False)
    med = statistics.median
    return {"runs": runs, "function_s": med(ours), "floor_s": med(floor), "overhead_s": med(ours) - med(floor),
            "in_process_startup_s": med(inside) if inside else None,
            "function_all_s": [round(v, 3) for v in ours], "floor_all_s": [round(v, 3) for v in floor]}


IN_CONTAINER = r"""
import http.client, json, os, signal, socket, statistics, subprocess, sys, time
body = sys.argv[1].encode()
runs = int(sys.argv[2])
ours, floor = [], []
for i in range(runs):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"])
    floor.append(time.perf_counter() - t0)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, PORT=str(port), MLFN_HOST="127.0.0.1")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "mlfn_runtime"], env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", "/predict", body, {"Content-Type": "application/json"})
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.001)
    ours.append(time.perf_counter() - t0)
    p.send_signal(signal.SIGTERM); p.wait()
print(json.dumps({"function_s": statistics.median(ours), "floor_s": statistics.median(floor),
                  "function_min_s": min(ours), "floor_min_s": min(floor)}))
"""


def cold_start_in_container(image: str, runs: int, body: bytes) -> dict:
    """Inside one container (no Docker overhead): `python3 -m mlfn_runtime` -> first 200 from
    /predict, vs `python3 -c pass`, interleaved, medians and minimums."""
    out = docker("run", "--rm", "--entrypoint", "python3", image, "-c", IN_CONTAINER, body.decode(), str(runs), timeout=600)
    r = json.loads(out.splitlines()[-1])
    r["overhead_s"] = r["function_s"] - r["floor_s"]
    r["overhead_min_s"] = r["function_min_s"] - r["floor_min_s"]
    return r


def latency(port: int, pngs: list, n: int) -> dict:
    client = Client(port)
    out = {}
    for batch in (1, 8, 32):
        body = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs[:batch]]}).encode()
        for _ in range(20):
            client.post("/predict", body)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, _ = client.post("/predict", body)
            times.append(time.perf_counter() - t0)
            assert status == 200
        times.sort()
        out[f"batch_{batch}"] = {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99) - 1] * 1000}
    return out


def throughput(port: int, body: bytes, clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def run(k):
        c = Client(port)
        while time.monotonic() < stop:
            status, _ = c.post("/predict", body)
            counts[k] += status == 200

    ts = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(counts) / seconds


def in_process_runner(image: str, seconds: float, extra_models=(), rounds: int = 5) -> dict:
    """Lock vs per-thread on the model runner alone: 8 threads, batch 1 and 8, the two modes
    interleaved for `rounds` rounds (medians reported: the machine may be shared)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "actions"))
    from mlfn_runtime.interpreter import ModelRunner

    cid = docker("create", image)
    tmp = Path(f"/tmp/{PREFIX}model-{cid[:8]}.tflite")
    try:
        docker("cp", f"{cid}:/opt/mlfn/function/models/digits/model.tflite", str(tmp))
    finally:
        docker("rm", cid, check=False)
    out = {}
    for path in [tmp, *map(Path, extra_models)]:
        label = "image_model" if path == tmp else path.stem
        runners = {m: ModelRunner(str(path), mode=m, max_interpreters=8) for m in ("lock", "per-thread")}
        for batch in (1, 8):
            x = np.random.default_rng(0).random((batch, *runners["lock"].inputs[0].shape[1:]), dtype=np.float32)
            rates = {m: [] for m in runners}
            for _ in range(rounds):
                for mode, r in runners.items():
                    counts = [0] * 8
                    stop = time.monotonic() + seconds / rounds

                    def run(k):
                        while time.monotonic() < stop:
                            r.predict(x)
                            counts[k] += 1

                    ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
                    [t.start() for t in ts]
                    [t.join() for t in ts]
                    rates[mode].append(sum(counts) / (seconds / rounds))
            for mode, v in rates.items():
                out[f"{label}_{mode}_batch_{batch}_calls_per_s"] = statistics.median(v)
    tmp.unlink(missing_ok=True)
    return out


def peak_memory(name: str) -> int | None:
    cid = docker("inspect", "-f", "{{.Id}}", name)
    for path in (f"/sys/fs/cgroup/memory/docker/{cid}/memory.max_usage_in_bytes",
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.peak"):
        try:
            return int(Path(path).read_text())
        except OSError:
            continue
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="function image (default: build the digits sample)")
    ap.add_argument("--base", help="base image for the floor (default: the image's org.opencontainers.image.base.name label)")
    ap.add_argument("--cold-runs", type=int, default=7)
    ap.add_argument("--requests", type=int, default=300, help="requests per latency measurement")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    ap.add_argument("--runner-model", action="append", default=[],
                    help="extra .tflite for the in-process lock vs per-thread comparison (repeatable)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    image = a.image or build_digits_image()
    base = a.base or docker("inspect", "-f", '{{index .Config.Labels "org.opencontainers.image.base.name"}}', image) or "mlfn-base:3.11"
    pngs = sample_pngs(32)
    one = json.dumps({"image": base64.b64encode(pngs[0]).decode()}).encode()
    result = {"image": image, "base": base}
    print(f"cold start ({a.cold_runs} runs)...", file=sys.stderr)
    result["cold_start"] = cold_start(image, base, a.cold_runs, one)
    result["cold_start_in_container"] = cold_start_in_container(image, max(a.cold_runs, 9) * 2, one)
    result.update(warm(image, pngs, one, a.requests, a.seconds))
    print("in-process runner (lock vs per-thread)...", file=sys.stderr)
    result["runner_only"] = in_process_runner(image, a.seconds, a.runner_model)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def warm(image: str, pngs: list, one: bytes, requests: int, seconds: float) -> dict:
    """(b) latency, (c) throughput of lock vs per-thread, (d) their peak memory."""
    names, ports, result = [], {}, {}
    try:
        for mode in ("lock", "per-thread"):
            name, ports[mode] = start(image, {"MLFN_SERVING_INTERPRETER": mode})
            names.append(name)
        print("warm latency...", file=sys.stderr)
        result["latency"] = latency(ports["lock"], pngs, requests)
        bodies = {"batch_1": one,
                  "batch_8": json.dumps({"images": [base64.b64encode(p).decode() for p in pngs[:8]]}).encode()}
        rates = {m: {b: [] for b in bodies} for m in ports}
        rounds = 3
        for r in range(rounds):  # the two settings interleaved: the machine may be shared
            print(f"throughput round {r + 1}/{rounds}...", file=sys.stderr)
            for mode, port in ports.items():
                for b, body in bodies.items():
                    rates[mode][b].append(throughput(port, body, 8, seconds / rounds))
        result["throughput_rps"] = {m: {b: statistics.median(v) for b, v in d.items()} for m, d in rates.items()}
        result["peak_memory_bytes"] = {mode: peak_memory(name) for mode, name in zip(ports, names)}
    finally:
        for n in names:
            docker("rm", "-f", n, check=False)
    return result


def print_table(result: dict) -> None:
    c = result["cold_start"]
    print(f"image {result['image']}  (floor: {result['base']})")
    print(f"(a) cold start: function {c['function_s'] * 1000:.0f} ms, floor {c['floor_s'] * 1000:.0f} ms, "
          f"overhead {c['overhead_s'] * 1000:+.0f} ms (median of {c['runs']}); in-process start-up "
          f"{(c['in_process_startup_s'] or 0) * 1000:.0f} ms")
    ic = result["cold_start_in_container"]
    print(f"    inside the container: first response {ic['function_s'] * 1000:.0f} ms vs python3 -c pass "
          f"{ic['floor_s'] * 1000:.0f} ms: overhead {ic['overhead_s'] * 1000:+.0f} ms median, "
          f"{ic['overhead_min_s'] * 1000:+.0f} ms best")
    for k, v in result["latency"].items():
        print(f"(b) {k:9s} p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms")
    for mode, v in result["throughput_rps"].items():
        print(f"(c) 8 clients, {mode:10s} batch 1: {v['batch_1']:.0f} req/s   batch 8: {v['batch_8']:.0f} req/s")
    for k, v in result["runner_only"].items():
        print(f"    runner only, 8 threads, {k}: {v:.0f}")
    for mode, v in result["peak_memory_bytes"].items():
        print(f"(d) peak memory ({mode}): {v / 2**20:.1f} MiB" if v else f"(d) peak memory ({mode}): n/a")


if __name__ == "__main__":
    sys.exit(main())
