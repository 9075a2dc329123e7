"""What an open, stalled connection costs the function, and whether slow clients can
exhaust it (issue 11, item 4).

Starts `python3 -m mlfn_runtime` (no model: the body is read before any model is needed)
on a free loopback port, opens N connections that each send a request whose
Content-Length exceeds what they send (a stalled body), and reports the server's RSS and
thread count before and after, the memory per held connection, how many were refused
(503 beyond serving.max_connections), whether a normal request still succeeds meanwhile,
and how long until the stalled connections are cut off (serving.body_timeout_seconds).

    python bench/connection_memory.py                           # this checkout's runtime
    python bench/connection_memory.py --runtime OLD/actions     # another checkout's runtime
    python bench/connection_memory.py -n 1500 --max-connections 2000 --body-timeout 5
"""
from __future__ import annotations

import argparse
import collections
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STALLED = b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n{\"image\": \""


def proc_status(pid: int) -> dict:
    """VmRSS (KiB) and Threads of a process, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path.encode())
        out = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                return out
            out += piece


def start(runtime: Path, settings: dict) -> tuple:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port), "PYTHONPATH": str(runtime),
           **{f"MLFN_SERVING_{k.upper()}": str(v) for k, v in settings.items() if v is not None}}
    proc = subprocess.Popen([sys.executable, "-m", "mlfn_runtime", "--host", "127.0.0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            if get(port, "/livez", 1).startswith(b"HTTP/1.1 200"):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the runtime in {runtime} did not start: {proc.communicate()[1].decode()[-2000:]}")


def states(conns: list) -> collections.Counter:
    """What each connection got so far: "held" (nothing yet), a status code, or "closed"."""
    out = collections.Counter()
    for s in conns:
        s.settimeout(0)
        try:
            data = s.recv(64, socket.MSG_PEEK)
        except BlockingIOError:
            out["held"] += 1
            continue
        except OSError:
            data = b""
        out[data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "closed"] += 1
    return out


def hold(port: int, n: int) -> list:
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(STALLED)
        conns.append(s)
    return conns


def measure(args) -> dict:
    proc, port = start(Path(args.runtime).resolve(), {"max_connections": args.max_connections,
                                                       "body_timeout_seconds": args.body_timeout})
    try:
        get(port, "/livez")
        time.sleep(0.5)
        before = proc_status(proc.pid)
        conns = hold(port, args.connections)
        time.sleep(args.settle)
        during = proc_status(proc.pid)
        t0 = time.monotonic()
        normal = get(port, "/livez", 10)[9:12].decode()
        normal_s = time.monotonic() - t0
        at_start = states(conns)
        cut_after = None
        if args.body_timeout:
            while time.monotonic() - t0 < args.body_timeout + 10:
                if not states(conns)["held"]:
                    cut_after = round(time.monotonic() - t0 + args.settle, 1)
                    break
                time.sleep(0.1)
        after = dict(states(conns)) if cut_after else None
        for s in conns:
            s.close()
        return {"rss_before_kib": before["VmRSS"], "rss_held_kib": during["VmRSS"], "threads_before": before["Threads"],
                "threads_held": during["Threads"], "connections": dict(at_start),
                "kib_per_held_connection": round((during["VmRSS"] - before["VmRSS"]) / max(1, at_start["held"]), 1),
                "another_request": f"{normal} in {normal_s:.2f} s", "stalled_cut_off_after_s": cut_after,
                "after_cut_off": after}
    finally:
        proc.kill()
        proc.communicate()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=1500)
    parser.add_argument("--runtime", default=str(ROOT / "actions"), help="folder holding mlfn_runtime")
    parser.add_argument("--max-connections", type=int, default=None, help="serving.max_connections (default: the runtime's)")
    parser.add_argument("--body-timeout", type=float, default=None,
                        help="serving.body_timeout_seconds; also waits for the stalled connections to be cut off")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to let the server take the connections")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 256)), hard))
    result = measure(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
