"""What a weighted alias costs per call, compared with calling a version directly.

An alias routed 100% to one version is a copy of that version (no extra hop); a weighted
alias is a conductor action: router activation -> version activation -> router activation.
This measures warm blocking invocations (`POST .../actions/PKG/X?blocking=true&result=true`)
of a version, a 100% alias and a 50/50 alias, and prints p50/p95/mean and the overhead.

    python bench/alias_overhead.py                       # in-process local controller, tiny image
    python bench/alias_overhead.py --image mlfn/digits:TAG --payload samples/digits/inputs/digit-3.json
    python bench/alias_overhead.py --apihost https://ow.example.com --auth UUID:KEY --image REG/digits@sha256:...
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_action import action_image_and_payload  # noqa: E402


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(session, url: str, payload, n: int) -> list:
    """Milliseconds of n blocking calls to url, after 5 warm-up calls (cold starts are measured elsewhere)."""
    for _ in range(5):
        session.post(url, json=payload).raise_for_status()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = session.post(url, json=payload)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="function image (default: the tiny test action image, built here)")
    ap.add_argument("--payload", help="JSON file to send (default: a small object)")
    ap.add_argument("-n", type=int, default=200, help="calls per entity (default 200)")
    ap.add_argument("--apihost", help="an existing OpenWhisk API (default: an in-process local controller)")
    ap.add_argument("--auth", help="uuid:key for --apihost")
    ap.add_argument("--namespace", default="_")
    ap.add_argument("--base", default="mlfn-base:3.11", help="base image of the tiny test action (mlfn base build)")
    a = ap.parse_args(argv)

    import requests

    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.interface import VersionSpec
    from mlfn.targets.openwhisk.target import openwhisk_target
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH, WskProps

    image, payload = action_image_and_payload(a.image, a.payload, a.base)

    server = controller = None
    if a.apihost:
        props = WskProps(apihost=a.apihost, auth=a.auth, namespace=a.namespace)
    else:
        from mlfn.targets.local.api import make_server

        server, controller = make_server(Path(tempfile.mkdtemp(prefix="mlfn-bench-")), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        props = WskProps(apihost=f"http://127.0.0.1:{server.server_address[1]}", auth=GUEST_AUTH, namespace="guest")
    t = Lifecycle(openwhisk_target(props=props))
    fn = f"bench-{int(time.time())}"
    try:
        for h in ("a", "b"):
            t.publish(VersionSpec(function=fn, image=image, digest="", model_sha256="", quantization="",
                                  pipeline_hash="", content_hash=f"{fn}-{h}"))
        t.set_traffic(fn, "weighted", {"v1": 50, "v2": 50})
        session = requests.Session()
        session.auth = props.credentials
        base = f"{props.base_url}/api/v1/namespaces/{props.namespace}/actions/{fn}"
        results = {entity: measure(session, f"{base}/{entity}?blocking=true&result=true", payload, a.n)
                   for entity in ("v1", "default", "weighted")}
        print(f"{'entity':<24}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
        labels = {"v1": "version v1 (direct)", "default": "alias 100% (copy)", "weighted": "alias 50/50 (conductor)"}
        for e, xs in results.items():
            print(f"{labels[e]:<24}{percentile(xs, 50):>9.2f}{percentile(xs, 95):>9.2f}{statistics.mean(xs):>9.2f}")
        d50 = percentile(results["weighted"], 50) - percentile(results["v1"], 50)
        print(f"weighted-alias overhead: +{d50:.2f} ms at p50 "
              f"(+{statistics.mean(results['weighted']) - statistics.mean(results['v1']):.2f} ms mean), n={a.n}")
    finally:
        try:
            t.delete(fn)
        finally:
            if server is not None:
                from mlfn.targets.local.api import close

                close(server, controller)
    return 0


if __name__ == "__main__":
    sys.exit(main())
