"""The runtime's own overhead (issue 17): mlfn's server against a plain stdlib LiteRT server
(bench/plain_server.py) in the SAME function image, so base, libraries and CPU limits are equal.

    apt-get install wrk                                    # the load generator (Debian)
    python bench/overhead_bench.py --image mlfn/digits:TAG [--rounds 5] [--seconds 5] [--json F]
    python bench/overhead_bench.py --image mlfn/digits:TAG --runtime mlfn=actions/mlfn_runtime \\
        --runtime before=OTHER_CHECKOUT/actions/mlfn_runtime   # runtimes mounted over the image's

Without --image the digits sample is trained and built first (bench/runtime_bench.py).
Every server answers the same request: POST /predict with the digits sample's digit-3.png
(Content-Type: image/png); the answers are checked to be byte-identical before measuring.
In each of --rounds interleaved rounds (the order of the servers rotates; at each load the
servers run back to back), every server gets, with wrk (one thread, keep-alive, C code: a
fraction of a core) for --seconds each:
 - 1 client: warm p50/p99 latency;
 - 8 and 32 concurrent keep-alive clients: req/s and p50/p99;
 - server CPU per request at each load, from the container's cgroup CPU counter before and
   after, and wrk's own CPU per request (getrusage of the child), which shows the client is
   not what limits the plain server.
Reports medians over the rounds and the ratios of each mlfn variant to plain, as a table
and (--json) one JSON document. Containers are named mlfnovh-* and removed at the end.
"""
from __future__ import annotations

import argparse
import http.client
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "digits" / "inputs" / "digit-3.png"
PLAIN = Path(__file__).resolve().parent / "plain_server.py"
LOADS = (1, 8, 32)
LUA = """wrk.method = "POST"
local f = io.open(os.getenv("MLFN_BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "image/png"
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format('RESULT {"requests":%d,"us":%d,"p50":%d,"p99":%d,"errors":%d,"non2xx":%d}\\n',
    s.requests, s.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def docker(*args: str) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:2])}: {r.stderr.strip()}")
    return r.stdout.strip()


class Server:
    """One container of the image: mlfn (optionally with a runtime mounted) or the plain server."""

    def __init__(self, label: str, image: str, port: int, cpus: str, runtime: str | None = None,
                 plain: bool = False, env: tuple = ()):
        self.label, self.port = label, port
        args = ["run", "-d", "--name", f"mlfnovh-{label}-{uuid.uuid4().hex[:6]}", "-p", f"127.0.0.1:{port}:8080"]
        if cpus:
            args += ["--cpus", cpus]
        for kv in env:
            args += ["-e", kv]
        if runtime:
            args += ["-v", f"{Path(runtime).resolve()}:/opt/mlfn/runtime/mlfn_runtime:ro"]
        if plain:
            args += ["-v", f"{PLAIN}:/opt/plain_server.py:ro", "--entrypoint", "python3", image, "/opt/plain_server.py"]
        else:
            args += [image]
        self.id = docker(*args)
        self.cpu_file = _cpu_counter(self.id)

    def cpu_seconds(self) -> float:
        text = self.cpu_file.read_text()
        if self.cpu_file.name == "cpuacct.usage":  # cgroup v1: nanoseconds
            return int(text) / 1e9
        return int(next(ln.split()[1] for ln in text.splitlines() if ln.startswith("usage_usec"))) / 1e6

    def answer(self, body: bytes, timeout: float = 30.0) -> bytes:
        end = time.monotonic() + timeout
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("POST", "/predict", body, {"Content-Type": "image/png"})
                r = c.getresponse()
                data = r.read()
                c.close()
                if r.status == 200:
                    return data
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > end:
                raise SystemExit(f"{self.label} did not answer POST /predict within {timeout:g} s")
            time.sleep(0.05)

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.id], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_counter(cid: str) -> Path:
    for p in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat",
              f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
        if Path(p).exists():
            return Path(p)
    raise SystemExit(f"cannot find the cgroup CPU counter of container {cid[:12]} (cgroupfs v1 or v2 expected)")


def wrk_run(server: Server, clients: int, seconds: float, script: Path) -> dict:
    """One wrk run; req/s, p50/p99 (ms), server and client CPU per request (ms)."""
    cpu0, child0 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
                        f"http://127.0.0.1:{server.port}/predict"], capture_output=True, text=True,
                       env={"MLFN_BENCH_BODY": str(SAMPLE), "PATH": "/usr/bin:/bin"}, timeout=seconds + 60)
    cpu1, child1 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result: {r.stdout[-300:]} {r.stderr[-300:]}")
    out = json.loads(line[7:])
    if out["errors"] or out["non2xx"]:
        raise SystemExit(f"{server.label} with {clients} clients: {out['errors']} socket errors, {out['non2xx']} non-2xx")
    n = out["requests"]
    client_cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    return {"rps": n / (out["us"] / 1e6), "p50_ms": out["p50"] / 1000, "p99_ms": out["p99"] / 1000,
            "server_cpu_ms": (cpu1 - cpu0) * 1000 / n, "client_cpu_ms": client_cpu * 1000 / n, "requests": n}


def measure(servers: list, rounds: int, seconds: float, script: Path) -> dict:
    raw = {s.label: {c: [] for c in LOADS} for s in servers}
    for s in servers:
        wrk_run(s, 32, 2, script)  # warm every thread's interpreter and the caches
    for rnd in range(rounds):
        order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
        for c in LOADS:  # the servers back to back at each load: the machine's load drifts slowly
            for s in order:
                raw[s.label][c].append(wrk_run(s, c, seconds, script))
        print(f"round {rnd + 1}/{rounds}: " + ", ".join(
            f"{s.label} {raw[s.label][32][-1]['rps']:.0f} req/s@32" for s in servers), file=sys.stderr, flush=True)
    med = {label: {c: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for c, runs in per.items()}
           for label, per in raw.items()}
    return {"raw": raw, "median": med}


def ratios(med: dict, label: str) -> dict:
    m, p = med[label], med["plain"]
    return {"p50_1": m[1]["p50_ms"] / p[1]["p50_ms"], "p99_1": m[1]["p99_ms"] / p[1]["p99_ms"],
            "rps_8": m[8]["rps"] / p[8]["rps"], "rps_32": m[32]["rps"] / p[32]["rps"],
            "p99_32": m[32]["p99_ms"] / p[32]["p99_ms"],
            "cpu_8": m[8]["server_cpu_ms"] / p[8]["server_cpu_ms"], "drop_8_to_32": m[32]["rps"] / m[8]["rps"]}


def table(med: dict, labels: list) -> str:
    rows = ["| server | 1 client p50 / p99 ms | 8 clients req/s | 8: p50 / p99 ms | 32 clients req/s "
            "| 32: p50 / p99 ms | server CPU ms/req (1 / 8 / 32) | wrk CPU ms/req (32) |", "|---|---|---|---|---|---|---|---|"]
    for label in labels:
        m = med[label]
        rows.append(f"| {label} | {m[1]['p50_ms']:.2f} / {m[1]['p99_ms']:.2f} | {m[8]['rps']:.0f} "
                    f"| {m[8]['p50_ms']:.2f} / {m[8]['p99_ms']:.2f} | {m[32]['rps']:.0f} "
                    f"| {m[32]['p50_ms']:.2f} / {m[32]['p99_ms']:.2f} "
                    f"| {m[1]['server_cpu_ms']:.2f} / {m[8]['server_cpu_ms']:.2f} / {m[32]['server_cpu_ms']:.2f} "
                    f"| {m[32]['client_cpu_ms']:.3f} |")
    rows += ["", "| mlfn / plain | warm p50 | warm p99 | req/s at 8 | req/s at 32 | p99 at 32 | CPU/req at 8 "
             "| own req/s 32 vs 8 |", "|---|---|---|---|---|---|---|---|"]
    for label in labels:
        if label != "plain":
            r = ratios(med, label)
            rows.append(f"| {label} | {r['p50_1']:.2f}x | {r['p99_1']:.2f}x | {r['rps_8']:.2f}x | {r['rps_32']:.2f}x "
                        f"| {r['p99_32']:.2f}x | {r['cpu_8']:.2f}x | {r['drop_8_to_32']:.2f}x |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", help="the digits function image (default: train and build the sample)")
    ap.add_argument("--runtime", action="append", default=[], metavar="LABEL=DIR",
                    help="an mlfn variant with this mlfn_runtime folder mounted over the image's "
                         "(repeatable; an empty DIR: the image's own runtime)")
    ap.add_argument("--env", action="append", default=[], metavar="LABEL:KEY=VALUE",
                    help="an environment variable for the variant LABEL, e.g. mlfn:MLFN_SERVING_WORKERS=32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--cpus", default="", help="docker --cpus for every container (default: no limit)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; apt-get install wrk (the load generator of this benchmark).")
    if a.image is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from runtime_bench import build_digits_image

        a.image = build_digits_image()
    variants = [tuple(v.split("=", 1)) for v in a.runtime] or [("mlfn", None)]
    body = SAMPLE.read_bytes()
    servers = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        try:
            servers.append(Server("plain", a.image, free_port(), a.cpus, plain=True))
            for label, runtime in variants:
                env = tuple(e.split(":", 1)[1] for e in a.env if e.split(":", 1)[0] == label)
                servers.append(Server(label, a.image, free_port(), a.cpus, runtime=runtime or None, env=env))
            answers = {s.label: s.answer(body) for s in servers}
            if len(set(answers.values())) != 1:
                raise SystemExit(f"the servers answer differently: {answers}")
            result = measure(servers, a.rounds, a.seconds, script)
        finally:
            for s in servers:
                s.remove()
    labels = [s.label for s in servers]
    result.update(image=a.image, rounds=a.rounds, seconds=a.seconds, cpus=a.cpus or None,
                  ratios={lb: ratios(result["median"], lb) for lb in labels if lb != "plain"})
    print(table(result["median"], labels))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
