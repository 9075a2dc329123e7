"""Synthetic load for environments with no real traffic (`--load DIR --rate 20`): requests
through the alias at a steady rate, from a folder of inputs (`*.json` bodies as they are,
images as {"image": b64}, `*.npz` rows of `x` as {"instances": [row]})."""
from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlfn.errors import ConfigError, MlfnError
from mlfn.rollout.quality import IMAGE_SUFFIXES

WORKERS = 16


def load_inputs(folder: str) -> list:
    p = Path(folder)
    if not p.is_dir():
        raise ConfigError(f"--load {folder} is not a folder of inputs (*.json, images, *.npz).")
    payloads = []
    for f in sorted(p.iterdir()):
        if f.suffix == ".json":
            try:
                payloads.append(json.loads(f.read_text()))
            except ValueError as e:
                raise ConfigError(f"--load: {f} is not valid JSON ({e}).") from None
        elif f.suffix.lower() in IMAGE_SUFFIXES:
            payloads.append({"image": base64.b64encode(f.read_bytes()).decode()})
        elif f.suffix == ".npz":
            import numpy as np

            with np.load(f, allow_pickle=False) as data:
                payloads += [{"instances": [row.tolist()]} for row in data["x"]]
    if not payloads:
        raise ConfigError(f"--load {folder} holds no inputs (*.json, images, *.npz).")
    return payloads


class SyntheticLoad:
    """Calls `target.invoke(function, payload, alias=alias)` `rate` times a second until stopped;
    counts answers and failures by the version that served them."""

    def __init__(self, target, function: str, alias: str, payloads: list, rate: float):
        self.target, self.function, self.alias = target, function, alias
        self.payloads, self.rate = payloads, rate
        self.sent = 0
        self.failed = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mlfn-load")
        self._thread = threading.Thread(target=self._run, name="mlfn-rollout-load", daemon=True)

    def __enter__(self) -> "SyntheticLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)  # requests not sent yet are dropped

    def _one(self, payload) -> None:
        try:
            self.target.invoke(self.function, payload, alias=self.alias, timeout=30)
        except MlfnError:
            with self.lock:
                self.failed += 1

    def _run(self) -> None:
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            self._pool.submit(self._one, self.payloads[n % len(self.payloads)])
            n += 1
            with self.lock:
                self.sent = n
            self._stop.wait(max(0.0, t0 + n / self.rate - time.monotonic()))
