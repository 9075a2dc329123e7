"""The local controller's container pool: warm latency per route, and a cold burst.

Warm (sequential blocking invokes, after warm-up), p50/p99 of:
  - the function container's own `/run`, called directly (no controller),
  - the version action `FN/v1` through the controller,
  - an alias routed 100% to v1 (a copy of the version: no extra hop),
  - a 90/10 weighted alias (a conductor: router -> version -> router).
Cold burst: a fresh function, 20 concurrent clients on its 90/10 weighted alias from no
containers at all; containers started (Docker `start` events of this controller), p50/p99,
req/s and errors. Killed: `docker kill` of every warm container, then 40 sequential calls
of the 90/10 alias; failures and latency.

    python bench/local_controller_bench.py                 # tiny test action image, built here
    python bench/local_controller_bench.py --image mlfn/digits:TAG --payload samples/digits/inputs/digit-3.json
"""
from __future__ import annotations

import argparse
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
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def spec(fn: str, image: str, content: str):
    from mlfn.targets.interface import VersionSpec

    return VersionSpec(function=fn, image=image, digest="", model_sha256="", quantization="", pipeline_hash="",
                       content_hash=content)


def deploy(target, fn: str, image: str) -> None:
    """v1, v2, alias `all` at 100% v1 and alias `canary` at 90/10."""
    for h in ("a", "b"):
        target.publish(spec(fn, image, f"{fn}-{h}"))
    target.set_traffic(fn, "all", {"v1": 100})
    target.set_traffic(fn, "canary", {"v1": 90, "v2": 10})


def timed_calls(session, url: str, payload, n: int) -> list:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = session.post(url, json=payload, timeout=60)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return times


def warm(target, controller, props, fn: str, payload, n: int) -> dict:
    import requests

    session = requests.Session()
    session.auth = props.credentials
    base = f"{props.base_url}/api/v1/namespaces/{props.namespace}/actions/{fn}"
    out = {}
    for entity in ("v1", "all", "canary"):
        url = f"{base}/{entity}?blocking=true&result=true"
        timed_calls(session, url, payload, 10)  # warm-up
        out[entity] = timed_calls(session, url, payload, n)
    # the function itself: the /run of the warm v1 container, bypassing the controller
    container_url = controller.pool.ready(fn + "/v1")[0].url
    direct = requests.Session()
    body = {"value": payload, "namespace": "guest", "action_name": f"/guest/{fn}/v1", "activation_id": "bench"}
    out["run"] = timed_calls(direct, container_url + "/run", body, n)
    return out


def cold_burst(props, owner: str, fn: str, payload, clients: int, calls: int) -> dict:
    import docker
    import requests

    from mlfn.targets.local.pool import ACTION_LABEL, OWNER_LABEL

    client = docker.from_env()
    started: dict = {}  # container id -> action
    events = client.events(decode=True, filters={"type": "container", "event": "start",
                                                 "label": f"{OWNER_LABEL}={owner}"})
    threading.Thread(target=lambda: [started.setdefault(e["id"], e["Actor"]["Attributes"].get(ACTION_LABEL))
                                     for e in events], daemon=True).start()
    url = f"{props.base_url}/api/v1/namespaces/{props.namespace}/actions/{fn}/canary?blocking=true&result=true"
    times, errors, lock = [], [], threading.Lock()

    def one_client():
        s = requests.Session()
        s.auth = props.credentials
        for _ in range(calls):
            t0 = time.perf_counter()
            try:
                r = s.post(url, json=payload, timeout=120)
                ok = r.status_code == 200
                why = "" if ok else f"HTTP {r.status_code} {r.text[:300]}"
            except requests.RequestException as e:
                ok, why = False, str(e)
            if why and len(errors) < 3:
                print("error:", why, file=sys.stderr)
            with lock:
                (times if ok else errors).append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    time.sleep(0.5)  # let the last start events arrive
    events.close()
    per_action: dict = {}
    for action in started.values():
        per_action[action] = per_action.get(action, 0) + 1
    return {"containers_started": len(started), "per_action": per_action, "ok": len(times), "errors": len(errors),
            "p50": percentile(times, 50), "p99": percentile(times, 99), "max": max(times, default=0),
            "rps": len(times) / wall, "wall_s": wall}


def after_kill(props, owner: str, fn: str, payload, calls: int = 40) -> dict:
    """Kill every container of this controller, then call the 90/10 alias `calls` times."""
    import docker
    import requests

    from mlfn.targets.local.pool import OWNER_LABEL

    killed = docker.from_env().containers.list(filters={"label": f"{OWNER_LABEL}={owner}"})
    for c in killed:
        c.kill()
    s = requests.Session()
    s.auth = props.credentials
    url = f"{props.base_url}/api/v1/namespaces/{props.namespace}/actions/{fn}/canary?blocking=true&result=true"
    t0 = time.perf_counter()
    codes, times = [], []
    for _ in range(calls):
        t = time.perf_counter()
        codes.append(s.post(url, json=payload, timeout=120).status_code)
        times.append((time.perf_counter() - t) * 1000)
    return {"killed": len(killed), "calls": calls, "failed": sum(c != 200 for c in codes), "first_ms": times[0],
            "max_ms": max(times), "total_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="function image (default: the tiny test action image, built here)")
    ap.add_argument("--payload", help="JSON file to send (default: a small object)")
    ap.add_argument("-n", type=int, default=200, help="warm calls per route (default 200)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients of the cold burst (default 20)")
    ap.add_argument("--calls", type=int, default=10, help="calls per client in the cold burst (default 10)")
    ap.add_argument("--base", default="mlfn-base:3.11", help="base image of the tiny test action")
    a = ap.parse_args(argv)

    from mlfn.targets.local.api import close, make_server
    from mlfn.targets.local.home import owner_id
    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.openwhisk.target import openwhisk_target
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH, WskProps

    image, payload = action_image_and_payload(a.image, a.payload, a.base)
    home = Path(tempfile.mkdtemp(prefix="mlfn-bench-"))
    server, controller = make_server(home, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    props = WskProps(apihost=f"http://127.0.0.1:{server.server_address[1]}", auth=GUEST_AUTH, namespace="guest")
    target = Lifecycle(openwhisk_target(props=props))
    stamp = int(time.time())
    warm_fn, cold_fn = f"bw-{stamp}", f"bc-{stamp}"
    try:
        deploy(target, warm_fn, image)
        deploy(target, cold_fn, image)
        burst = cold_burst(props, owner_id(home), cold_fn, payload, a.clients, a.calls)
        results = warm(target, controller, props, warm_fn, payload, a.n)
        killed = after_kill(props, owner_id(home), warm_fn, payload)
    finally:
        close(server, controller)
    labels = {"run": "function /run directly", "v1": "version v1 via controller", "all": "alias 100% v1",
              "canary": "alias 90/10 (conductor)"}
    print(f"warm, sequential, n={a.n}")
    print(f"  {'route':<28}{'p50 ms':>9}{'p99 ms':>9}")
    for key in ("run", "v1", "all", "canary"):
        xs = results[key]
        print(f"  {labels[key]:<28}{percentile(xs, 50):>9.2f}{percentile(xs, 99):>9.2f}")
    print(f"cold burst: {a.clients} clients x {a.calls} calls on a 90/10 alias, from no containers")
    print(f"  containers started {burst['containers_started']} {burst['per_action']}, ok {burst['ok']}, "
          f"errors {burst['errors']}, "
          f"p50 {burst['p50']:.1f} ms, p99 {burst['p99']:.1f} ms, max {burst['max']:.1f} ms, "
          f"{burst['rps']:.1f} req/s over {burst['wall_s']:.1f} s")
    print(f"after docker kill of all {killed['killed']} containers: {killed['calls']} calls on the 90/10 alias, "
          f"{killed['failed']} failed, first {killed['first_ms']:.0f} ms, max {killed['max_ms']:.0f} ms, "
          f"all in {killed['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
