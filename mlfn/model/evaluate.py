"""Measuring a model before and after conversion on the same held-out data.

Classification (integer labels, more than one output): top-k accuracy in percent for each
k in `quantize.top_k`. Regression (float targets, or one output): mean squared and absolute error.
Latency is single-input wall time (median and p90) — what one function invocation pays.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from mlfn.model.data import ValidationSet

LATENCY_RUNS = 50
LATENCY_WARMUP = 5


def task_of(y, predictions) -> str:
    import numpy as np

    y = np.asarray(y)
    classes = predictions.shape[-1] if predictions.ndim > 1 else 1
    if y.dtype.kind in "iub" and classes > 1 and y.ndim == 1:
        return "classification"
    return "regression"


def scores(y, predictions, top_k: Sequence[int] = (1,)) -> dict:
    """{"accuracy": top-1 %, "top_k": {"3": %...}} or {"mse": float, "mae": float}."""
    import numpy as np

    y = np.asarray(y)
    p = np.asarray(predictions, dtype="float64")
    if task_of(y, p) == "classification":
        order = np.argsort(-p, axis=-1)
        out = {"top_k": {}}
        for k in sorted(set([1, *top_k])):
            hit = (order[:, :k] == y[:, None]).any(axis=1)
            out["top_k"][str(k)] = round(float(hit.mean() * 100.0), 3)
        out["accuracy"] = out["top_k"]["1"]
        return out
    target = y.reshape(p.shape) if y.size == p.size else y
    return {"mse": float(np.mean((p - target) ** 2)), "mae": float(np.mean(np.abs(p - target)))}


def latency(call: Callable[[list], object], sample: list, runs: int = LATENCY_RUNS) -> dict:
    """Median and p90 wall time in ms of `call(sample)` after a warm-up."""
    import numpy as np

    for _ in range(LATENCY_WARMUP):
        call(sample)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call(sample)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"latency_ms_p50": round(float(np.percentile(times, 50)), 4),
            "latency_ms_p90": round(float(np.percentile(times, 90)), 4)}


def evaluate(original, tflite: bytes, validation: Optional[ValidationSet], top_k: Sequence[int] = (1,),
             sample: Optional[list] = None, original_size: Optional[int] = None,
             progress: Optional[Callable[[str], None]] = None) -> dict:
    """Compare `original` (a LoadedModel, or None for a .tflite source) with the converted model."""
    import numpy as np

    from mlfn.model import litert

    runner = litert.load_runner(tflite, "the converted model")
    if original is not None:
        runner.order([s.name for s in original.inputs])
    if sample is None and validation is not None:
        sample = [x[:1] for x in validation.x]
    if sample is None:
        sample = [np.zeros([1] + [d or 1 for d in s.shape], dtype=s.dtype) for s in getattr(original, "inputs", [])]
    report: dict = {"validation_data": validation.source if validation else None,
                    "samples": int(len(validation.y)) if validation else 0}
    conv: dict = {"size_bytes": len(tflite)}
    orig: Optional[dict] = None
    if original is not None:
        orig = {"size_bytes": original_size}
    if validation is not None:
        if progress:
            progress(f"Evaluating on {len(validation.y)} held-out sample(s)")
        p_conv = runner.predict(validation.x)
        report["task"] = task_of(validation.y, p_conv)
        conv.update(scores(validation.y, p_conv, top_k))
        if orig is not None:
            orig.update(scores(validation.y, original.predict(validation.x), top_k))
    if sample:
        conv.update(latency(runner, sample))
        if orig is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                orig.update(latency(lambda s: original.predict(s), sample, runs=max(10, LATENCY_RUNS // 2)))
    report["original"] = orig
    report["converted"] = conv
    report.update(quality_change(orig, conv))
    return report


def quality_change(orig: Optional[dict], conv: dict) -> dict:
    """{"accuracy_drop": points} or {"mse_increase": ..., "mse_increase_pct": %} from two `scores`."""
    if orig is not None and "accuracy" in orig and "accuracy" in conv:
        return {"accuracy_drop": round(orig["accuracy"] - conv["accuracy"], 3)}
    out: dict = {}
    if orig is not None and "mse" in orig and "mse" in conv:
        out["mse_increase"] = conv["mse"] - orig["mse"]
        if orig["mse"] > 0:
            out["mse_increase_pct"] = round((conv["mse"] / orig["mse"] - 1.0) * 100.0, 4)
    return out
