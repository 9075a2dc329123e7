"""Closed-loop load for the benchmarks: each client is a thread with its own connection that
sends its next request when the last one is answered."""
from __future__ import annotations

import statistics
import threading
import time
from typing import Callable


def closed_loop(workers: list, keep_going: Callable[[int], bool]) -> dict:
    """Run every worker (a callable making one request) in its own thread while
    `keep_going(calls this thread made)` is true; p50/p99 ms and req/s over all of them."""
    times: list = []
    lock = threading.Lock()

    def run(w):
        mine = []
        while keep_going(len(mine)):
            t0 = time.perf_counter()
            w()
            mine.append(time.perf_counter() - t0)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    times.sort()
    return {"p50_ms": statistics.median(times) * 1000, "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
            "rps": len(times) / wall}
