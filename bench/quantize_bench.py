"""Quantization benchmark: size, accuracy and latency per mode, with pass/fail targets.

    python bench/quantize_bench.py                 # digits (trained here) + MobileNetV2
    python bench/quantize_bench.py --no-mobilenet  # digits and digits-outliers only (~1 min)

Targets checked (exit code 1 when one is missed):
- int8 size <= 0.27 x the float32 TFLite model (digits and MobileNetV2), for the
  smaller of per-channel (the default) and per-tensor (quantize.per_channel: false)
  int8; both are reported. Per-channel scale/zero-point tables cost ~12 bytes per output
  channel (~0.4 MB on MobileNetV2, which puts it at ~0.28);
- digits: int8 top-1 accuracy within 1 point of the Keras model;
- digits-outliers (samples/digits/outliers.py, a model plain int8 breaks): the `auto` pick
  passes the gate (quantize.max_accuracy_drop 1) and is smaller than float16.
Rows `int8-selective` and `auto` say how many layers stayed float and which mode auto picked.
MobileNetV2 is `tf.keras.applications.MobileNetV2(weights=None, input_shape=(224,224,3))`
calibrated on random data (no weights can be downloaded here): its sizes and latency are
meaningful, its accuracy is not measured. Runs through `mlfn.model.quantize_model`, the
same code path as `mlfn quantize`, with the cache off.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ("none", "dynamic", "float16", "int8", "int8-selective", "int16x8", "auto")
MAX_DROP = 1.0  # quantize.max_accuracy_drop for the auto and int8-selective rows
MAX_INT8_RATIO = 0.27
MAX_DIGITS_DROP = 1.0


def _train_digits(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("digits_train", ROOT / "samples" / "digits" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.train(out, seed=0)


def _config(name: str, folder: Path, model: str, rep: str, validation: str | None):
    from mlfn.config import from_dict

    q = {"representative_data": rep, "representative_samples": 100, "top_k": [1, 3]}
    if validation:
        q["validation_data"] = validation
        q["max_accuracy_drop"] = MAX_DROP
    return from_dict({"name": name, "model": {"path": model}, "quantize": q}, source=folder / "mlfn.yaml")


def _run(cfg, modes) -> list:
    """One row per mode, plus an int8 per-tensor row (quantize.per_channel: false)."""
    import copy

    from mlfn.errors import MlfnError
    from mlfn.model import quantize_model

    variants = [(m, m, True) for m in modes]
    if "int8" in modes:
        variants.append(("int8 per-tensor", "int8", False))
    rows = []
    for label, mode, per_channel in variants:
        c = copy.deepcopy(cfg)
        c.quantize.per_channel = per_channel
        t0 = time.perf_counter()
        try:
            r = quantize_model(c, mode=mode, use_cache=False, check_gate=False)
        except MlfnError as e:
            print(f"  {cfg.name} {label}: FAILED: {e}", file=sys.stderr)
            rows.append({"model": cfg.name, "mode": label, "error": str(e)})
            continue
        seconds = time.perf_counter() - t0
        if r.auto:
            label = f"auto (picked {r.mode})"
        elif r.selective:
            label = f"int8-selective ({len(r.selective['float_layers'])} of {r.selective['layers']} layers float)"
        ev = r.evaluation or {}
        conv, orig = ev.get("converted") or {}, ev.get("original") or {}
        rows.append({"model": cfg.name, "mode": label, "size_bytes": r.size_bytes,
                     "original_size_bytes": r.original_size_bytes, "accuracy": conv.get("accuracy"),
                     "original_accuracy": orig.get("accuracy"), "accuracy_drop": ev.get("accuracy_drop"),
                     "latency_ms_p50": conv.get("latency_ms_p50"), "latency_ms_p90": conv.get("latency_ms_p90"),
                     "original_latency_ms_p50": orig.get("latency_ms_p50"), "convert_s": round(seconds, 2)})
        print(f"  {cfg.name} {label}: {r.size_bytes} bytes in {seconds:.1f} s", file=sys.stderr)
    f32 = next(x["size_bytes"] for x in rows if x["mode"] == "none")
    for x in rows:
        if "size_bytes" in x:
            x["ratio_vs_float32"] = round(x["size_bytes"] / f32, 4)
    return rows


def _digits(work: Path, modes) -> list:
    folder = work / "digits"
    print("digits: training", file=sys.stderr)
    _train_digits(folder)
    cfg = _config("digits", folder, "model.keras", "calibration.npy", "validation.npz")
    return _run(cfg, modes)


def _outliers(work: Path, modes) -> list:
    spec = importlib.util.spec_from_file_location("digits_outliers", ROOT / "samples" / "digits" / "outliers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    folder = work / "outliers"
    print("digits-outliers: training", file=sys.stderr)
    mod.train_outlier_model(folder, seed=0)
    cfg = _config("digits-outliers", folder, "model.keras", "calibration.npy", "validation.npz")
    return _run(cfg, [m for m in modes if m != "int16x8"])


def _mobilenet(work: Path, modes) -> list:
    import numpy as np
    import tensorflow as tf

    folder = work / "mobilenet"
    folder.mkdir()
    print("mobilenet_v2: building (weights=None)", file=sys.stderr)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    model.save(folder / "model.keras")
    rng = np.random.default_rng(0)
    np.save(folder / "calibration.npy", rng.uniform(-1, 1, size=(16, 224, 224, 3)).astype("float32"))
    cfg = _config("mobilenet_v2", folder, "model.keras", "calibration.npy", None)
    cfg.quantize.representative_samples = 16
    return _run(cfg, modes)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def markdown(rows) -> str:
    out = ["| model | mode | size | × float32 | top-1 | Δ top-1 | p50 ms | p90 ms | convert s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            why = r["error"].split("interpreter: ", 1)[-1]  # the cause, not the temp path
            out.append(f"| {r['model']} | {r['mode']} | failed: {why[:120]} | | | | | | |")
            continue
        drop = None if r["accuracy_drop"] is None else 0.0 - r["accuracy_drop"] + 0.0
        out.append(f"| {r['model']} | {r['mode']} | {r['size_bytes'] / 1024:.1f} KB | {r['ratio_vs_float32']:.3f} | "
                   f"{_fmt(r['accuracy'], '.2f')} | {_fmt(drop, '+.2f')} | {_fmt(r['latency_ms_p50'], '.3f')} | "
                   f"{_fmt(r['latency_ms_p90'], '.3f')} | {r['convert_s']:.1f} |")
    return "\n".join(out)


def checks(rows) -> list:
    """(text, passed) per target. Size: the smaller of the int8 variants must meet the
    target (per-channel is the default; per-tensor is quantize.per_channel: false)."""
    results = []
    results += _outlier_checks(rows)
    for model in sorted({r["model"] for r in rows} - {"digits-outliers"}):
        int8 = [r for r in rows if r["model"] == model and r["mode"].startswith("int8") and not r.get("error")]
        if not int8:
            continue
        for r in int8:
            results.append((f"{model}: {r['mode']} size {r['ratio_vs_float32']:.3f} x float32 "
                            f"{'<=' if r['ratio_vs_float32'] <= MAX_INT8_RATIO else '>'} {MAX_INT8_RATIO}", None))
        best = min(int8, key=lambda r: r["ratio_vs_float32"])
        results.append((f"{model}: smallest int8 ({best['mode']}) {best['ratio_vs_float32']:.3f} x float32 <= "
                        f"{MAX_INT8_RATIO}", best["ratio_vs_float32"] <= MAX_INT8_RATIO))
        default = next((r for r in int8 if r["mode"] == "int8"), None)
        if default and default["accuracy_drop"] is not None:
            results.append((f"{model}: int8 top-1 {default['accuracy']:.2f}% vs Keras "
                            f"{default['original_accuracy']:.2f}% (drop {default['accuracy_drop']:.2f} <= "
                            f"{MAX_DIGITS_DROP})", default["accuracy_drop"] <= MAX_DIGITS_DROP))
    return results


def _outlier_checks(rows) -> list:
    own = {r["mode"].split(" ")[0]: r for r in rows if r["model"] == "digits-outliers" and not r.get("error")}
    auto, f16 = own.get("auto"), own.get("float16")
    if not auto or not f16 or auto.get("accuracy_drop") is None:
        return [("digits-outliers: auto picked a mode", False)] if "auto" in {r["mode"].split(" ")[0] for r in rows
                                                                             if r["model"] == "digits-outliers"} else []
    return [(f"digits-outliers: {auto['mode']} drops {auto['accuracy_drop']:.2f} <= {MAX_DROP} points and is "
             f"{auto['size_bytes'] / 1024:.1f} KB < float16 {f16['size_bytes'] / 1024:.1f} KB",
             auto["accuracy_drop"] <= MAX_DROP and auto["size_bytes"] < f16["size_bytes"])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-mobilenet", action="store_true", help="skip MobileNetV2 (digits only)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default: all)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if "none" not in modes:
        modes.insert(0, "none")  # the float32 baseline for ratios
    with tempfile.TemporaryDirectory(prefix="mlfn-qbench-") as tmp:
        rows = _digits(Path(tmp), modes)
        rows += _outliers(Path(tmp), modes)
        if not args.no_mobilenet:
            rows += _mobilenet(Path(tmp), modes)
    print(markdown(rows))
    print()
    ok = True
    for text, passed in checks(rows):
        if passed is None:
            print(f"- {text}")
            continue
        print(f"- [{'x' if passed else ' '}] {text}")
        ok &= passed
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
