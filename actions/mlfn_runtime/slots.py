"""A semaphore without Python-level locks: the worker slots of a server
(serving.workers) and the interpreter calls a batcher lets run at once."""
from __future__ import annotations

import queue


class WorkerSlots:
    """At most `n` holders at once (`with slots:` or acquire/release): a semaphore whose
    tokens sit in a C-implemented SimpleQueue, so a request takes and returns its slot
    without Python-level locks (threading.BoundedSemaphore's Condition and notify cost
    more than the rest of dispatching when many connections wait for few workers)."""

    def __init__(self, n: int):
        self._tokens: "queue.SimpleQueue[int]" = queue.SimpleQueue()
        for i in range(n):
            self._tokens.put(i)

    def acquire(self) -> None:
        self._tokens.get()

    def release(self) -> None:
        self._tokens.put(0)

    def __enter__(self):
        self._tokens.get()
        return self

    def __exit__(self, *exc) -> None:
        self._tokens.put(0)
