"""Rollout benchmark (issue 13): per-version analysis against analysis on the aggregate.

A v2 that fails 30% of its requests is rolled out over a healthy v1 with steps 10,25,50,100,
an interval of 5 s, max error rate 5%, 2 failed checks to roll back, and 20 req/s of
synthetic load through the default alias, on the local target (an in-process controller
and real containers of the tiny test action, whose versions misbehave through their env).
Twice, on fresh functions:
  per-version   the gate reads v2's own activation records (what `mlfn rollout` does)
  aggregate     the same rollout, but the gate reads the whole alias (v1 + v2 summed)
For each: time from the start to the rollback decision, the step reached, and the requests
v2 answered (and failed) before the traffic went back to v1, counted from its activation
records.

    python bench/rollout_bench.py [--interval 5] [--rate 20] [--max-error-rate 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMAGE = "mlfn-rollout-test-action:1"


def build_image(base: str) -> str:
    import docker
    import mlfn_runtime.router

    context = Path(tempfile.mkdtemp(prefix="mlfn-rollout-bench-"))
    shutil.copytree(ROOT / "tests/targets/openwhisk/action", context, dirs_exist_ok=True)
    (context / "mlfn_runtime").mkdir()
    (context / "mlfn_runtime" / "__init__.py").write_text("")
    shutil.copy(mlfn_runtime.router.__file__, context / "mlfn_runtime" / "router.py")
    docker.from_env().images.build(path=str(context), tag=IMAGE, rm=True, buildargs={"BASE": base})
    return IMAGE


def one_run(lifecycle, label: str, aggregate: bool, a, load_dir: str) -> dict:
    from mlfn.rollout import RolloutSettings, begin, run
    from mlfn.rollout.metrics import ActivationMetrics, AggregateMetrics
    from mlfn.targets.interface import VersionSpec

    fn = f"bench-{label}-{int(time.time())}"
    for content, env in (("a", {}), ("b", {"MLFN_TEST_FAIL_RATE": "0.3"})):
        lifecycle.publish(VersionSpec(function=fn, image=IMAGE, digest="", model_sha256="", quantization="",
                                      pipeline_hash="", content_hash=f"{fn}-{content}", env=env))
    for v in ("v1", "v2"):  # warm: container start-up is not what is measured
        lifecycle.target.invoke(fn, {"instances": [[1.0]]}, version=v)
    settings = RolloutSettings(steps=[10, 25, 50, 100], interval=a.interval, max_error_rate=a.max_error_rate,
                               min_requests=a.min_requests, failures=2, max_wait=120, load=load_dir, rate=a.rate)
    since = int(time.time() * 1000)
    t0 = time.monotonic()
    decided = {}

    def progress(line: str) -> None:
        print(f"  [{label} {time.monotonic() - t0:5.1f}s] {line}", file=sys.stderr)
        if line.split(":")[0] in ("ROLLED BACK", "PROMOTED", "INCONCLUSIVE"):
            decided["at"] = time.monotonic() - t0

    per_version = ActivationMetrics(lifecycle.target, fn)
    metrics = AggregateMetrics(per_version, ["v1", "v2"]) if aggregate else per_version
    rollout = begin(lifecycle.target, fn, "v2", settings)
    result = run(lifecycle.target, rollout, progress, metrics=metrics)
    time.sleep(2)  # requests in flight at the decision land in the records
    served = lifecycle.target.activations(fn, "v2", since)
    served = [s for s in served if s.start_ms <= since + decided.get("at", 0) * 1000]
    try:
        lifecycle.delete(fn)
    except Exception:  # noqa: BLE001 - cleaning up a benchmark's function is best effort
        pass
    return {"analysis": label, "status": result.status, "decided_s": round(decided.get("at", float("nan")), 1),
            "step": f"{result.steps[result.step]}%" if result.step >= 0 else "none",
            "v2_requests": len(served), "v2_failed": sum(1 for s in served if s.failed)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--max-error-rate", type=float, default=5.0)
    ap.add_argument("--min-requests", type=int, default=5)
    ap.add_argument("--base", default="mlfn-base:3.11")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)

    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.local.api import close, make_server
    from mlfn.targets.openwhisk.target import openwhisk_target
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH, WskProps

    build_image(a.base)
    load_dir = Path(tempfile.mkdtemp(prefix="mlfn-rollout-load-"))
    for i in range(20):
        (load_dir / f"{i}.json").write_text(json.dumps({"n": i}))
    server, controller = make_server(Path(tempfile.mkdtemp(prefix="mlfn-bench-")), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    props = WskProps(apihost=f"http://127.0.0.1:{server.server_address[1]}", auth=GUEST_AUTH, namespace="guest")
    lifecycle = Lifecycle(openwhisk_target(props=props))
    try:
        rows = [one_run(lifecycle, "per-version", False, a, str(load_dir)),
                one_run(lifecycle, "aggregate", True, a, str(load_dir))]
    finally:
        close(server, controller)
    print(f"v2 failing 30%, steps 10,25,50,100, interval {a.interval:g}s, {a.rate:g} req/s, max error rate "
          f"{a.max_error_rate:g}%, 2 failed checks\n")
    print("| analysis | result | decided after | step reached | requests v2 answered | of them failed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['analysis']} | {r['status']} | {r['decided_s']} s | {r['step']} | {r['v2_requests']} | "
              f"{r['v2_failed']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
