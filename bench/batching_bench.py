"""Server-side batching (issue 17): throughput and latency with serving.batching off and on.

    python tests/runtime/make_models.py /tmp/m --mobilenet     # digits_int8 + mobilenetv2_int8
    python bench/batching_bench.py --models /tmp/m [--rounds 3] [--seconds 3] [--latencies 0,2,10] [--json]
    python bench/batching_bench.py --models /tmp/m --per-row   # the runner alone: ms per row by batch size

Two models, each served by one `python -m mlfn_runtime` subprocess per configuration
(all started up front and kept running, so the configurations are measured interleaved,
round by round, under the same machine load):
 - mobilenet: MobileNetV2(weights=None, 224x224x3) int8 with float input, called with
   gRPC ModelInfer and raw contents (the cheapest encoding: the interpreter dominates);
 - digits: the 8x8 digits model int8 (~0.01 ms per invoke), called with POST /predict
   and a PNG (decode and pre-processing dominate): where batching cannot help.
Configurations: batching off, and on (max_batch_size 32) with each max_latency_ms of
--latencies (default 0, 2 and 10);
every other setting at its default (serving.workers 8, interpreter per-thread, so at
most min(8, CPUs) interpreters). 1, 8 and 32 closed-loop clients (threads, one keep-alive
connection each) send one-row requests for `--seconds` per cell. Reported per cell: the
median over rounds of requests/s, p50 and p99 (ms), and the mean rows per interpreter
call the server's /metrics counted (mlfn_batch_rows).
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "actions"))

from closed_loop import closed_loop  # noqa: E402
from function_process import serve  # noqa: E402
from grpc_bench import GrpcClient  # noqa: E402

CLIENTS = (1, 8, 32)
DIGITS_PRE = [{"decode_image": {}}, {"convert": {"mode": "L"}}, {"resize": {"width": 8, "height": 8}},
              {"scale": {"factor": 1 / 255}}]


def function_dir(root: Path, model: Path, name: str, pre: list, latency_ms) -> Path:
    (root / "models" / name).mkdir(parents=True)
    shutil.copy(model, root / "models" / name / "model.tflite")
    serving = {"max_payload_bytes": 64 << 20}
    # off is written out: batching is on by default
    serving["batching"] = ({"enabled": False} if latency_ms is None else
                           {"enabled": True, "max_batch_size": 32, "max_latency_ms": latency_ms})
    spec = {"name": name, "runtime": "litert", "serving": serving,
            "models": [{"name": name, "path": f"models/{name}/model.tflite", "pre": pre, "post": []}]}
    (root / "function.json").write_text(json.dumps(spec))
    return root


class PredictClient:
    def __init__(self, port: int, model: str, body: bytes):
        self.conn, self.body = http.client.HTTPConnection("127.0.0.1", port), body

    def __call__(self):
        self.conn.request("POST", "/predict", self.body, {"Content-Type": "image/png"})
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200, body


def mobilenet_request(port: int, model: str):
    from mlfn_runtime.oip_grpc import MESSAGES

    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", f"/v2/models/{model}")
    name = json.loads(c.getresponse().read())["inputs"][0]["name"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    return MESSAGES["ModelInferRequest"](model_name=model, inputs=[{"name": name, "datatype": "FP32",
                                                                   "shape": list(x.shape)}],
                                         raw_input_contents=[x.tobytes()])


def digits_png(port: int, models: Path) -> bytes:
    import io

    from PIL import Image

    x = np.load(models / "digits.npz")["x"][0]
    buf = io.BytesIO()
    Image.fromarray(np.rint(x * 255).astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def batch_counters(port: int) -> tuple:
    """(interpreter calls, rows) the batcher counted so far; (0, 0) with batching off."""
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    got = {m: float(v) for m, v in re.findall(r"^mlfn_batch_rows_(count|sum)\{[^}]*\} (\S+)$", text, re.M)}
    return got.get("count", 0.0), got.get("sum", 0.0)


def measure(make, clients: int, seconds: float) -> dict:
    """req/s, p50/p99 ms of `clients` closed-loop threads for `seconds` (after a warm-up)."""
    workers = [make() for _ in range(clients)]
    for w in workers:
        w()
    stop = time.perf_counter() + seconds
    return closed_loop(workers, lambda done: time.perf_counter() < stop)


def bench(args) -> list:
    tmp = Path(tempfile.mkdtemp(prefix="mlfn-batching-bench-"))
    models = {"mobilenet": (args.models / "mobilenetv2_int8.tflite", [], GrpcClient,
                            lambda port: mobilenet_request(port, "mobilenet")),
              "digits": (args.models / "digits_int8.tflite", DIGITS_PRE, PredictClient,
                         lambda port: digits_png(port, args.models))}
    configs = {"off": None, **{f"on {ms:g}ms": ms for ms in args.latencies}}
    servers, samples = {}, {}
    try:
        for name, (path, pre, _, _) in models.items():
            for config, latency in configs.items():
                fdir = function_dir(tmp / f"{name}-{len(servers)}", path, name, pre, latency)
                servers[name, config] = serve(fdir)
        requests = {name: m[3](servers[name, "off"][1]) for name, m in models.items()}
        for rnd in range(args.rounds):
            for name, (_, _, client, _) in models.items():
                request = requests[name]
                for clients in CLIENTS:
                    for config in configs:
                        port = servers[name, config][1]
                        before = batch_counters(port)
                        r = measure(lambda: client(port, name, request), clients, args.seconds)
                        after = batch_counters(port)
                        calls = after[0] - before[0]
                        r["rows_per_call"] = (after[1] - before[1]) / calls if calls else 1.0
                        samples.setdefault((name, clients, config), []).append(r)
                        print(f"round {rnd + 1} {name:9} c{clients:<2} {config:8} {r['rps']:7.1f} req/s  "
                              f"p50 {r['p50_ms']:7.2f}  p99 {r['p99_ms']:7.2f} ms  rows/call "
                              f"{r['rows_per_call']:.1f}", file=sys.stderr, flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return [{"model": name, "clients": clients, "batching": config,
             **{k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}}
            for (name, clients, config), rs in samples.items()]


def per_row(models: Path) -> None:
    """ms per row of one MobileNetV2 invoke at batch 1, 8 and 32 (the runner alone, one thread)."""
    from mlfn_runtime.interpreter import ModelRunner

    runner = ModelRunner(str(models / "mobilenetv2_int8.tflite"))
    for batch in (1, 8, 32):
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
        runner.predict(x)
        times = []
        for _ in range(max(3, 64 // batch)):
            t0 = time.perf_counter()
            runner.predict(x)
            times.append(time.perf_counter() - t0)
        print(f"batch {batch:2}: {statistics.median(times) * 1000 / batch:.2f} ms per row")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="folder from make_models.py OUT --mobilenet")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="per cell and round")
    p.add_argument("--latencies", type=lambda t: [float(v) for v in t.split(",")], default=[0, 2, 10],
                   help="max_latency_ms values to measure with batching on, comma-separated")
    p.add_argument("--json", action="store_true")
    p.add_argument("--per-row", action="store_true", help="only the runner's ms per row by batch size")
    args = p.parse_args()
    if args.per_row:
        per_row(args.models)
        return 0
    rows = bench(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| model | clients | batching | req/s | p50 ms | p99 ms | rows/call |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['clients']} | {r['batching']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['rows_per_call']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
