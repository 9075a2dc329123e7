"""`mlfn quantize --compare`: every quantization mode side by side.

Converts the model once per mode (through the same cache as `quantize_model`), then
writes `report.json` and `report.png` (size, accuracy and latency per mode) into the
report folder and returns a `CompareReport`. The accuracy gate is reported per mode
instead of failing the comparison.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mlfn.config import Config, ExtraModel, QUANTIZE_MODES
from mlfn.errors import MlfnError, ModelError
from mlfn.output import human_bytes, table


@dataclass
class CompareReport:
    model: str
    source: str
    original: dict  # size_bytes, accuracy / mse, latency_ms_p50/p90 of the TensorFlow model
    baseline_mode: Optional[str]  # sizes compare to this mode's file (float32 TFLite), else the original
    modes: list = field(default_factory=list)  # one dict per mode, see compare_modes
    max_accuracy_drop: Optional[float] = None
    report_path: Optional[str] = None
    chart_path: Optional[str] = None
    skipped: dict = field(default_factory=dict)  # mode -> why
    max_mse_increase_pct: Optional[float] = None
    notes: list = field(default_factory=list)  # e.g. why a gate does not apply

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def render(self) -> str:
        regression = not any(m.get("accuracy") is not None for m in self.modes) and any(
            m.get("mse") is not None for m in self.modes)
        rows = []
        for m in self.modes:
            if m.get("error"):
                rows.append([m["mode"], "-", "-", "-", "-", "-", "error: " + m["error"]])
                continue
            if regression:
                metric = "-" if m.get("mse") is None else f"{m['mse']:.4g}"
                delta = _signed_pct(m.get("mse_delta_pct"))
            else:
                metric = "-" if m.get("accuracy") is None else f"{m['accuracy']:.2f}%"
                delta = "-" if m.get("accuracy_delta") is None else f"{m['accuracy_delta']:+.2f}"
            rows.append([
                m["mode"], human_bytes(m["size_bytes"]), _signed_pct(m.get("size_delta_pct")), metric, delta,
                "-" if m.get("latency_ms_p50") is None else f"{m['latency_ms_p50']:.3f} ms",
                {True: "pass", False: "FAIL", None: ""}[m.get("gate")],
            ])
        base = f"float32 TFLite ({self.baseline_mode})" if self.baseline_mode else "the original model"
        lines = [f"{self.model}: {self.source}"]
        o = self.original or {}
        if o:
            acc = o.get("accuracy")
            lines.append(
                f"original: {human_bytes(o.get('size_bytes'))}"
                + (f", top-1 {acc:.2f}%" if acc is not None else "")
                + (f", MSE {o['mse']:.4g}, MAE {o['mae']:.4g}" if o.get("mse") is not None and o.get("mae") is not None
                   else "")
                + (f", {o['latency_ms_p50']:.3f} ms p50" if o.get("latency_ms_p50") is not None else "")
            )
        headers = ["MSE", "ΔMSE"] if regression else ["accuracy", "Δaccuracy"]
        lines += ["", table(rows, ["mode", "size", "Δsize", *headers, "latency p50", "gate"])]
        lines.append(f"Δsize against {base}; " + ("ΔMSE in % of the original model's MSE." if regression
                                                   else "Δaccuracy in points against the original model."))
        for mode, why in self.skipped.items():
            lines.append(f"skipped {mode}: {why}")
        lines += [f"note: {w}" for w in self.notes]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        if self.chart_path:
            lines.append(f"chart:  {self.chart_path}")
        return "\n".join(lines)


def _signed_pct(v) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _mode_row(mode: str, r, original: dict, base_size: int, gate, mse_gate) -> dict:
    """One mode's row of the comparison: size against the baseline, quality against the original."""
    conv = (r.evaluation or {}).get("converted") or {}
    acc = conv.get("accuracy")
    delta = None if acc is None or original.get("accuracy") is None else round(acc - original["accuracy"], 3)
    mse_pct = (r.evaluation or {}).get("mse_increase_pct")
    return {
        "mode": mode, "size_bytes": r.size_bytes,
        "size_ratio": round(r.size_bytes / base_size, 4),
        "size_delta_pct": round((r.size_bytes / base_size - 1.0) * 100.0, 2),
        "accuracy": acc, "accuracy_delta": delta, "top_k": conv.get("top_k"), "mse": conv.get("mse"),
        "mae": conv.get("mae"), "mse_delta_pct": mse_pct,
        "latency_ms_p50": conv.get("latency_ms_p50"), "latency_ms_p90": conv.get("latency_ms_p90"),
        "gate": _mode_gate(gate, delta, mse_gate, mse_pct),
        "tflite_path": r.tflite_path, "sha256": r.sha256, "cached": r.cached,
    }


def _bar_text(v: float) -> str:
    """Plain numbers on the chart (1234.5 -> '1234.5', 0.00123 -> '0.00123'), never 1.23e+03."""
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.1e}"


def mode_notes(rows: list) -> list:
    """Sentences for modes that do not pay off on this model: no smaller, or slower, than float32."""
    base = next((m for m in rows if m["mode"] == "none" and not m.get("error")), None)
    if base is None:
        return []
    notes = []
    for m in rows:
        if m["mode"] == "none" or m.get("error"):
            continue
        if m["size_bytes"] >= base["size_bytes"] * 0.97:
            notes.append(f"{m['mode']} does not shrink this model ({human_bytes(m['size_bytes'])} against "
                         f"{human_bytes(base['size_bytes'])} as float32): its weights are too few for quantization "
                         "to outweigh the scales and metadata it adds.")
        slow, fast = m.get("latency_ms_p50"), base.get("latency_ms_p50")
        if slow and fast and slow > fast * 1.15:
            notes.append(f"{m['mode']} is slower than float32 here ({slow:.3f} ms against {fast:.3f} ms p50): "
                         "on this CPU LiteRT's float kernels (XNNPACK) beat its quantized ones for this model; "
                         "choose it for size, or measure on the CPU that will serve it.")
    return notes


def _mode_gate(max_drop, accuracy_delta, max_mse_pct, mse_pct) -> Optional[bool]:
    """pass/fail of every gate that applies to this mode; None when none does."""
    checks = []
    if max_drop is not None and accuracy_delta is not None:
        checks.append(-accuracy_delta <= max_drop)
    if max_mse_pct is not None and mse_pct is not None:
        checks.append(mse_pct <= max_mse_pct)
    return all(checks) if checks else None


def compare_modes(cfg: Config, *, modes: Optional[list] = None, model: Optional[ExtraModel] = None,
                  out_dir: Optional[str] = None, use_cache: bool = True, chart: bool = True,
                  progress: Optional[Callable[[str], None]] = None) -> CompareReport:
    from mlfn.model.gate import gate_warnings
    from mlfn.model.quantize import quantize_model

    say = progress or (lambda _m: None)
    gate, mse_gate = cfg.quantize.max_accuracy_drop, cfg.quantize.max_mse_increase_pct
    modes = list(modes or [m for m in QUANTIZE_MODES if m != "auto"])
    results, skipped, errors = {}, {}, {}
    for mode in modes:
        if mode in ("int8", "int16x8", "int8-selective") and not cfg.quantize.representative_data:
            skipped[mode] = "needs quantize.representative_data"
            continue
        if mode in ("int8-selective", "auto") and not (cfg.quantize.validation_data and (
                gate is not None or mse_gate is not None)):
            skipped[mode] = "needs quantize.validation_data and quantize.max_accuracy_drop (or max_mse_increase_pct)"
            continue
        say(f"Mode {mode}")
        try:  # the gate is reported per mode below, not raised
            results[mode] = quantize_model(cfg, model=model, mode=mode, use_cache=use_cache, progress=say,
                                           check_gate=False)
        except MlfnError as e:
            if len(modes) == 1:
                raise
            errors[mode] = str(e)
    if not results:
        raise ModelError("No quantization mode converted: " + "; ".join(f"{m}: {e}" for m, e in errors.items()))
    first = next(iter(results.values()))
    if first.source_format == "tflite":
        raise ModelError(f"{first.source} is already a .tflite model; --compare needs the original SavedModel or Keras model.")
    ev0 = next((r.evaluation for r in results.values() if r.evaluation and r.evaluation.get("original")), None)
    original = dict((ev0 or {}).get("original") or {})
    original["size_bytes"] = first.original_size_bytes
    baseline = results.get("none")
    base_size = baseline.size_bytes if baseline else first.original_size_bytes
    rows = []
    for mode in modes:
        if mode in errors:
            rows.append({"mode": mode, "error": errors[mode]})
            continue
        r = results.get(mode)
        if r is None:
            continue
        rows.append(_mode_row(mode, r, original, base_size, gate, mse_gate))
    report = CompareReport(model=first.model_name, source=first.source, original=original,
                           baseline_mode="none" if baseline else None, modes=rows,
                           max_accuracy_drop=gate, skipped=skipped, max_mse_increase_pct=mse_gate,
                           notes=gate_warnings(gate, mse_gate, ev0 or next(iter(results.values())).evaluation)
                           + mode_notes(rows))
    folder = Path(out_dir) if out_dir else cfg.project_dir / ".mlfn" / "report"
    from mlfn.model.quantize import atomic_write

    report.report_path = str((folder / "report.json").resolve())
    if chart:
        report.chart_path = str((folder / "report.png").resolve())
        atomic_write(Path(report.chart_path), render_chart(report))
    atomic_write(Path(report.report_path), json.dumps(report.to_dict(), indent=2).encode())
    return report


def render_chart(report: CompareReport) -> bytes:
    """A PNG: size, accuracy and latency per mode (matplotlib's Agg canvas, no global backend)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    rows = [m for m in report.modes if not m.get("error")]
    names = [m["mode"] for m in rows]
    biggest = max([m["size_bytes"] for m in rows] + [(report.original or {}).get("size_bytes") or 0])
    unit_name, unit = ("MB", 1 / 1024 ** 2) if biggest >= 1024 ** 2 else ("KB", 1 / 1024)
    panels = [(f"size ({unit_name})", [m["size_bytes"] * unit for m in rows],
               (report.original or {}).get("size_bytes"), unit)]
    if any(m.get("accuracy") is not None for m in rows):
        panels.append(("top-1 accuracy (%)", [m.get("accuracy") or 0 for m in rows],
                       (report.original or {}).get("accuracy"), 1))
    elif any(m.get("mse") is not None for m in rows):
        panels.append(("MSE", [m.get("mse") or 0 for m in rows], (report.original or {}).get("mse"), 1))
    tf_latency = (report.original or {}).get("latency_ms_p50")
    # TensorFlow's eager latency dwarfs LiteRT's: name it in the title instead of drawing it.
    panels.append(("latency p50 (ms)" + (f"; TensorFlow {tf_latency:.3g} ms" if tf_latency else ""),
                   [m.get("latency_ms_p50") or 0 for m in rows], None, 1))
    fig = Figure(figsize=(4 * len(panels), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd"]
    for i, (title, values, ref, unit) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        bars = ax.bar(names, values, color=colors[: len(names)])
        ax.bar_label(bars, labels=[_bar_text(v) for v in values], fontsize=8)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _bar_text(v)))
        if ref is not None:
            ax.axhline(ref * unit, color="grey", linestyle="--", linewidth=1, label="original")
            ax.legend(fontsize=8, loc="best", framealpha=0.6)
        if "accuracy" in title and values:
            low = min(values + ([ref] if ref is not None else []))
            ax.set_ylim(max(0.0, low - 5.0), 100.5)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(f"{report.model}: quantization modes", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
