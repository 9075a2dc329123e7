"""Benchmark the Knative target's own overhead (not the cluster's).

    python3 bench/knative_target.py            # from the repository root
    python3 bench/knative_target.py --json

Measures:
- cold import of mlfn.targets.knative (what every `mlfn status -t knative` pays before
  the kubernetes client is loaded), and of the kubernetes client itself;
- rendering + validating one Service manifest (CRD schema + webhook rules);
- each Target operation against the fake API server of the tests (a real HTTP server with
  a simulated controller that readies revisions at once), with the API requests it makes.
  The wall time there is mlfn + HTTP + the 20 ms poll interval, not Knative's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cold_import(module: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        times.append(float(out.stdout) * 1000)
    return statistics.median(times)


def render_validate(n: int = 200) -> dict:
    from mlfn.config import Config
    from mlfn.targets.knative import manifest as km
    from mlfn.targets.knative.validate import service_schema, validate_service
    from tests.targets.knative.conftest import version_spec

    t = time.perf_counter()
    service_schema()
    schema_ms = (time.perf_counter() - t) * 1000
    cfg = Config(name="digits")
    spec = version_spec(1)
    traffic = [{"revisionName": "digits-v1", "percent": 100}, {"revisionName": "digits-v1", "tag": "v1", "percent": 0}]
    r, v = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        m = km.render_service(cfg, spec, 1, namespace="ns", traffic=traffic)
        t1 = time.perf_counter()
        validate_service(m)
        t2 = time.perf_counter()
        r.append((t1 - t0) * 1000)
        v.append((t2 - t1) * 1000)
    return {"schema_load_ms": round(schema_ms, 1), "render_ms_median": round(statistics.median(r), 2),
            "validate_ms_median": round(statistics.median(v), 2)}


def operations() -> dict:
    from mlfn.config import Config
    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.knative.target import knative_target
    from tests.targets.knative.conftest import version_spec
    from tests.targets.knative.fake_apiserver import FakeApiServer

    out = {}
    with FakeApiServer(revision_delay=0.0, tick=0.005) as api, tempfile.TemporaryDirectory() as tmp:
        kc = api.write_kubeconfig(Path(tmp) / "kubeconfig")

        def op(name, fn):
            target = Lifecycle(knative_target(Config(name="digits"), kubeconfig=kc, poll_interval=0.02,
                                            wait_timeout=30))
            before = len(api.kube.requests)
            t = time.perf_counter()
            fn(target)
            out[name] = {"ms": round((time.perf_counter() - t) * 1000, 1),
                         "api_requests": len(api.kube.requests) - before}

        op("publish v1 (create)", lambda t: t.publish(version_spec(1)))
        op("publish v2 (new revision + tag)", lambda t: t.publish(version_spec(2)))
        op("publish v2 again (idempotent)", lambda t: t.publish(version_spec(2)))
        op("traffic v1=90 v2=10", lambda t: t.set_traffic("digits", "default", {"v1": 90, "v2": 10}))
        op("promote v2", lambda t: t.promote("digits", "v2"))
        op("rollback", lambda t: t.rollback("digits", "default"))
        op("status", lambda t: t.status("digits"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = {
        "import_mlfn.targets.knative_ms": round(cold_import("mlfn.targets.knative"), 1),
        "import_kubernetes_client_ms": round(cold_import("kubernetes.client"), 1),
        **render_validate(),
        "operations": operations(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for k, v in result.items():
        if k != "operations":
            print(f"{k:38s} {v}")
    print(f"{'operation':38s} {'ms':>8s} {'API requests':>13s}")
    for k, v in result["operations"].items():
        print(f"{k:38s} {v['ms']:8.1f} {v['api_requests']:13d}")


if __name__ == "__main__":
    main()
