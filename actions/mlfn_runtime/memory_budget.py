"""Memory for decoded images, budgeted against the container's memory limit.

A 71 KB PNG can decode to 64 MB; a few of them at once kill a 256 MB container. So an
image pipeline asks, from the image's header alone (size and mode, nothing decoded yet),
how many bytes its steps will hold at most (`Pipeline.peak_bytes`), and reserves them
here before decoding. Concurrent requests share one budget: each reserves, decodes,
runs its steps and releases. What can never fit is a 413 at once; what does not fit
now waits up to `WAIT_SECONDS` for other requests to release, then is a 413 too.

    budget = MemoryBudget.for_this_process(serving)   # limit - baseline - reserve
    with budget.reserve(need, "'image' (4000x4000 RGBA)"):
        ... decode and pre-process ...

The limit: `MLFN_MEMORY_MB`, else the cgroup's (v2 `memory.max`, v1
`memory.limit_in_bytes`); without one nothing is budgeted (only MLFN_MAX_IMAGE_PIXELS
bounds an image). The baseline is the process's resident memory when the function has
loaded; the reserve covers request bodies (4 x serving.max_payload_bytes per worker: raw,
decompressed, parsed, base64-decoded) plus `SLACK_BYTES` for the interpreter and Python,
and is at most half of what is left.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Optional

from mlfn_runtime.errors import ConfigurationError, PayloadTooLarge

MIB = 1024 * 1024
SLACK_BYTES = 24 * MIB
WAIT_SECONDS = 5.0
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


def memory_limit_bytes(environ=None, cgroup_files=CGROUP_LIMIT_FILES) -> Optional[int]:
    """MLFN_MEMORY_MB, else the cgroup memory limit, else None (no limit known)."""
    env = os.environ if environ is None else environ
    value = (env.get("MLFN_MEMORY_MB") or "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigurationError(f"MLFN_MEMORY_MB must be a positive number of MiB, not {value!r}.")
        return int(value) * MIB
    for path in cgroup_files:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            return int(text)
        return None  # "max" (v2) or a huge v1 value: no limit
    return None


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def return_freed_memory() -> bool:
    """Make glibc give large freed blocks back to the OS (a fixed mmap threshold of 128 KiB,
    one arena per CPU at most). By default a freed 16 MB image block raises the threshold
    and stays in the freeing thread's arena: after a few large images the process held
    far more than it used, and concurrent requests were OOM-killed within the budget.
    False where this is not glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold, m_arena_max = -3, -8
        return bool(libc.mallopt(m_mmap_threshold, 128 * 1024)) and bool(libc.mallopt(m_arena_max, os.cpu_count() or 2))
    except (OSError, AttributeError, ImportError):
        return False


class MemoryBudget:
    """Bytes that image decoding may hold at once, shared by concurrent requests.
    `capacity` None: unbudgeted (every reservation is granted)."""

    def __init__(self, capacity: Optional[int], limit: Optional[int] = None):
        self.capacity = capacity
        self.limit = limit if limit is not None else capacity
        self.in_use = 0
        self.waiting = 0  # requests waiting for room: only then does a release wake anyone
        self._cond = threading.Condition()

    @classmethod
    def for_this_process(cls, serving) -> "MemoryBudget":
        limit = memory_limit_bytes()
        if limit is None:
            return cls(None)
        return_freed_memory()
        free = max(0, limit - resident_bytes())
        # request bodies; at most half of what is free, so that a large payload limit times
        # many workers does not leave nothing for images
        reserve = min(SLACK_BYTES + 4 * serving.max_payload_bytes * serving.workers, free // 2)
        return cls(free - reserve, limit)

    @contextlib.contextmanager
    def reserve(self, nbytes: int, what: str):
        """Hold `nbytes` while the block runs; PayloadTooLarge (413) naming `what` when
        they can never fit, or do not fit within WAIT_SECONDS."""
        if self.capacity is None:
            yield
            return
        if nbytes > self.capacity:
            raise PayloadTooLarge(
                f"{what} needs about {nbytes // MIB} MiB to decode, more than the {self.capacity // MIB} MiB "
                f"this function has for images (memory limit {self.limit // MIB} MiB); send a smaller image")
        with self._cond:
            if self.in_use + nbytes > self.capacity:
                self.waiting += 1
                try:
                    fits = self._cond.wait_for(lambda: self.in_use + nbytes <= self.capacity, WAIT_SECONDS)
                finally:
                    self.waiting -= 1
            else:
                fits = True
            if not fits:
                raise PayloadTooLarge(
                    f"{what} needs about {nbytes // MIB} MiB to decode and other requests hold "
                    f"{self.in_use // MIB} of the {self.capacity // MIB} MiB for images; retry, or send a smaller image")
            self.in_use += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                if self.waiting:
                    self._cond.notify_all()
