"""The model-quality gate: a probe set sent straight to the candidate version and to the
stable one (Target.invoke with version=...), answers compared.

A probe is a `.npz` with `x` (inputs, batch first) and optionally `y` (labels: class
indices, one-hot rows, or numbers for regression), or a folder of images in one
sub-folder per label (`probe/7/a.png`). With labels the gate fails when the candidate's
accuracy is more than `max_accuracy_drop` points below stable's (for regression: when its
mean squared error is higher by more than that); without labels, when fewer than
`min_agreement` percent of its top-1 answers equal stable's.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mlfn.errors import ConfigError, TargetError

BATCH = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class Probe:
    payloads: list  # request bodies, each a batch
    labels: Optional[list] = None  # one per input: int class, str label or float target
    task: str = "classification"  # or "regression"


@dataclass
class QualityResult:
    passed: bool
    reason: str
    values: dict = field(default_factory=dict)


def load_probe(path: str, task: str = "auto") -> Probe:
    p = Path(path)
    if p.is_dir():
        return _image_probe(p)
    if p.suffix != ".npz" or not p.is_file():
        raise ConfigError(f"--probe {path}: give a .npz file with x (and y), or a folder of images in one "
                          f"sub-folder per label.")
    import numpy as np

    with np.load(p, allow_pickle=False) as data:
        if "x" not in data:
            raise ConfigError(f"--probe {path} has no array 'x' (found: {', '.join(data.files) or 'none'}).")
        x, y = data["x"], (data["y"] if "y" in data else None)
    if y is not None and len(y) != len(x):
        raise ConfigError(f"--probe {path}: x has {len(x)} rows but y has {len(y)}.")
    payloads = [{"instances": x[i:i + BATCH].tolist()} for i in range(0, len(x), BATCH)]
    if y is None:
        return Probe(payloads)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    is_regression = task == "regression" or (task == "auto" and np.issubdtype(y.dtype, np.floating)
                                             and not np.all(np.equal(np.mod(y, 1), 0)))
    labels = [float(v) for v in y.ravel()] if is_regression else [int(v) for v in y.ravel()]
    return Probe(payloads, labels, "regression" if is_regression else "classification")


def _image_probe(folder: Path) -> Probe:
    items = sorted((d.name, f) for d in folder.iterdir() if d.is_dir() for f in sorted(d.iterdir())
                   if f.suffix.lower() in IMAGE_SUFFIXES)
    if not items:
        raise ConfigError(f"--probe {folder} holds no images in label sub-folders (e.g. {folder}/7/a.png).")
    encoded = [{"b64": base64.b64encode(f.read_bytes()).decode()} for _, f in items]
    payloads = [{"instances": encoded[i:i + BATCH]} for i in range(0, len(encoded), BATCH)]
    return Probe(payloads, [label for label, _ in items])


def _answer(prediction, task: str):
    """The regression value, or the top-1 of one prediction as (label or None, index or None)."""
    if isinstance(prediction, dict) and ("label" in prediction or "index" in prediction):
        return (prediction.get("label"), prediction.get("index"))
    if isinstance(prediction, dict):  # a multi-output model: its first output
        prediction = next(iter(prediction.values()), None)
    flat = prediction
    while isinstance(flat, list) and len(flat) == 1 and isinstance(flat[0], list):
        flat = flat[0]
    if task == "regression":
        return float(flat[0] if isinstance(flat, list) else flat)
    if isinstance(flat, list):
        return (None, max(range(len(flat)), key=lambda i: flat[i]))
    return (None, flat)


def answers(target, function: str, version: str, probe: Probe) -> list:
    out = []
    for payload in probe.payloads:
        result = target.invoke(function, payload, version=version).result
        preds = result.get("predictions") if isinstance(result, dict) else None
        if not isinstance(preds, list) or len(preds) != len(payload["instances"]):
            raise TargetError(f"{function}/{version} did not answer the probe with one prediction per input.")
        out += [_answer(p, probe.task) for p in preds]
    return out


def _matches(answer: tuple, label) -> bool:
    """A top-1 (label, index) against a probe label: a label name (image folders) or a class index."""
    name, index = answer
    if isinstance(label, str):
        return name == label or (name is None and str(index) == label)
    return index == label


def judge(probe: Probe, candidate: list, stable: list, max_drop: float,
          min_agreement: Optional[float]) -> QualityResult:
    """Compare the answers of the candidate and stable versions on the probe."""
    n = len(candidate)
    if probe.labels is None:
        agree = 100.0 * sum(1 for c, s in zip(candidate, stable) if c == s) / n
        limit = 100.0 if min_agreement is None else min_agreement
        values = {"agreement": round(agree, 2), "min_agreement": limit}
        ok = agree >= limit
        return QualityResult(ok, "" if ok else f"top-1 agreement with stable {agree:.1f}% < {limit}%", values)
    if probe.task == "regression":
        mse_c = sum((c - y) ** 2 for c, y in zip(candidate, probe.labels)) / n
        mse_s = sum((s - y) ** 2 for s, y in zip(stable, probe.labels)) / n
        values = {"mse": round(mse_c, 6), "stable_mse": round(mse_s, 6)}
        ok = mse_c - mse_s <= max_drop
        return QualityResult(ok, "" if ok else f"MSE {mse_c:.4g} is worse than stable's {mse_s:.4g} by more "
                                               f"than {max_drop}", values)
    acc_c = 100.0 * sum(_matches(c, y) for c, y in zip(candidate, probe.labels)) / n
    acc_s = 100.0 * sum(_matches(s, y) for s, y in zip(stable, probe.labels)) / n
    values = {"accuracy": round(acc_c, 2), "stable_accuracy": round(acc_s, 2)}
    ok = acc_s - acc_c <= max_drop
    return QualityResult(ok, "" if ok else f"accuracy {acc_c:.1f}% is {acc_s - acc_c:.1f} points below stable's "
                                           f"{acc_s:.1f}% (at most {max_drop} allowed)", values)


def quality_gate(target, function: str, candidate: str, stable: str, probe: Probe, max_drop: float,
                 min_agreement: Optional[float]) -> QualityResult:
    try:
        cand = answers(target, function, candidate, probe)
    except TargetError as e:
        return QualityResult(False, f"the candidate failed the probe: {e}")
    stab = answers(target, function, stable, probe)
    return judge(probe, cand, stab, max_drop, min_agreement)
