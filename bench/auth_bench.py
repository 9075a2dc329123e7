"""What authentication adds to a warm /predict on digits.

    python bench/auth_bench.py                 # builds the tiny test models first (TensorFlow, ~20 s)
    python bench/auth_bench.py --models DIR    # a folder made by tests/runtime/make_models.py
    python bench/auth_bench.py --json

Two measurements:
 (a) end to end: the real server (mlfn_runtime.make_server) on loopback, one keep-alive
     client, POST /predict of one digits PNG; warm p50 with no auth, with an API key
     (X-API-Key) and with an RS256 JWT (Authorization: Bearer). The three run interleaved,
     in rounds, so machine noise hits them alike; the deltas are of the medians.
 (b) the check alone: `Guard.admit(headers, "predict", models)`, median of many calls, for
     an API key, an RS256 JWT (cached after its first verification, as served) and an RS256
     JWT verified from scratch (each call a new token) — the cost a first request pays.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "actions"))


def _models(path):
    if path:
        return Path(path)
    out = Path(tempfile.mkdtemp(prefix="mlfn-authbench-"))
    subprocess.run([sys.executable, str(ROOT / "tests" / "runtime" / "make_models.py"), str(out)], check=True,
                   capture_output=True, timeout=900)
    return out


def _function_dirs(models: Path, material, work: Path) -> tuple:
    from tests.runtime.conftest import make_function_dir

    plain = make_function_dir(work / "plain", models)
    authed = make_function_dir(work / "auth", models)
    keys = work / "keys.json"
    keys.write_text(json.dumps(material.key_set))
    spec = json.loads((authed / "function.json").read_text())
    spec["auth"] = {"enabled": True, "keys_file": str(keys), "jwt": {"algorithms": ["RS256"], "audience": "mlfn-digits",
                                                                     "issuer": "https://issuer.test"}}
    (authed / "function.json").write_text(json.dumps(spec))
    return plain, authed


def _serve(function_dir):
    from mlfn_runtime import make_server

    srv = make_server(str(function_dir), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def _timed_posts(port: int, body: bytes, headers: dict, n: int) -> list:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": "image/png", **headers})
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t0)
        assert r.status == 200, r.status
    conn.close()
    return out


def end_to_end(plain_port, auth_port, png, material, rounds: int, per_round: int) -> dict:
    modes = {"none": (plain_port, {}), "api_key": (auth_port, {"X-API-Key": material.keys["predict"]}),
             "rs256_jwt": (auth_port, {"Authorization": "Bearer " + material.token("r1", "RS256")})}
    samples = {m: [] for m in modes}
    for port, headers in modes.values():
        _timed_posts(port, png, headers, 50)  # warm
    for _ in range(rounds):
        for mode, (port, headers) in modes.items():
            samples[mode] += _timed_posts(port, png, headers, per_round)
    p50 = {m: statistics.median(v) * 1000 for m, v in samples.items()}
    return {"p50_ms": p50, "added_ms": {"api_key": p50["api_key"] - p50["none"],
                                         "rs256_jwt": p50["rs256_jwt"] - p50["none"]},
            "requests_per_mode": rounds * per_round}


def check_alone(guard, material, n: int) -> dict:
    models = ("digits",)
    cases = {"api_key": {"X-API-Key": material.keys["predict"]},
             "rs256_jwt_cached": {"Authorization": "Bearer " + material.token("r1", "RS256")}}
    out = {}
    for name, headers in cases.items():
        guard.admit(headers, "predict", models)
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            guard.admit(headers, "predict", models)
            times.append(time.perf_counter_ns() - t0)
        out[name] = statistics.median(times) / 1e6
    fresh = ["Bearer " + material.token("r1", "RS256", jti=str(i)) for i in range(min(n, 500))]
    times = []
    for token in fresh:
        t0 = time.perf_counter_ns()
        guard.admit({"Authorization": token}, "predict", models)
        times.append(time.perf_counter_ns() - t0)
    out["rs256_jwt_uncached"] = statistics.median(times) / 1e6
    return {"median_ms": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="folder made by tests/runtime/make_models.py (default: build one)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import numpy as np

    from tests.auth.credentials import make_material
    from tests.runtime.conftest import digit_png

    models = _models(args.models)
    material = make_material()
    png = digit_png(np.load(models / "digits.npz")["x"][0])
    with tempfile.TemporaryDirectory() as work:
        plain_dir, auth_dir = _function_dirs(models, material, Path(work))
        plain, authed = _serve(plain_dir), _serve(auth_dir)
        try:
            result = {"end_to_end": end_to_end(plain.port, authed.port, png, material, args.rounds, args.per_round),
                      "check_alone": check_alone(authed.state.auth, material, 20000)}
        finally:
            for srv in (plain, authed):
                srv.shutdown()
                srv.server_close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    e2e, alone = result["end_to_end"], result["check_alone"]["median_ms"]
    print(f"warm POST /predict p50 ({e2e['requests_per_mode']} requests each, interleaved):")
    for mode, ms in e2e["p50_ms"].items():
        added = e2e["added_ms"].get(mode)
        print(f"  {mode:<10} {ms:8.3f} ms" + (f"   ({added:+.3f} ms)" if added is not None else ""))
    print("the check alone (median):")
    for name, ms in alone.items():
        print(f"  {name:<20} {ms:8.4f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
