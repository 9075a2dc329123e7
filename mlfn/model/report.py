"""Human-readable rendering of quantization results (the JSON form is the dataclass)."""
from __future__ import annotations

from mlfn.output import human_bytes, table


_REMOVED = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
            "GaussianDropout", "AlphaDropout", "ActivityRegularization"}
_FOLDED = {"BatchNormalization", "FusedBatchNormV3", "FusedBatchNorm"}
# Layers and graph ops that become a TFLite MUL of their own (not a batch normalization).
_OWN_MULS = {"Multiply", "Mul", "Rescaling", "Normalization"}


def batchnorm_notes(before: dict, after: dict) -> list:
    """What became of the model's batch normalizations: folded into the weights of the layer
    before them, or (after an activation, where folding is impossible) kept as MUL + ADD."""
    bns = sum(n for k, n in before.items() if k in _FOLDED)
    if not bns:
        return []
    name = next(k for k in before if k in _FOLDED)
    own_muls = sum(n for k, n in before.items() if k in _OWN_MULS)
    kept = min(bns, max(0, after.get("MUL", 0) - own_muls))
    notes = []
    if bns - kept:
        notes.append(f"{bns - kept} {name} folded into the preceding layer's weights")
    if kept:
        notes.append(f"{kept} {name} kept as MUL + ADD (it follows an activation, so it cannot be folded; "
                     "put it before the activation to fold it)")
    return notes


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def ops_table(before: dict, after: dict) -> str:
    rows = [[k, v] for k, v in before.items()]
    rows_after = [[k, v] for k, v in after.items()]
    n = max(len(rows), len(rows_after))
    rows += [["", ""]] * (n - len(rows))
    rows_after += [["", ""]] * (n - len(rows_after))
    return table([a + b for a, b in zip(rows, rows_after)], ["before (TF/Keras)", "n", "after (TFLite)", "n"])


def render_result(r) -> str:
    lines = [
        f"{r.model_name}: {r.source} ({r.source_format}) -> {r.tflite_path}",
        f"mode {r.mode}{'' if r.per_channel or r.mode in ('none', 'passthrough') else ' (per-tensor)'}, "
        f"target {r.target}, loads in: {', '.join(r.verified) or 'not checked'}{' (cached)' if r.cached else ''}",
        f"size: {human_bytes(r.original_size_bytes)} -> {human_bytes(r.size_bytes)} "
        f"({r.size_ratio * 100:.1f}% of the original)",
        "",
        ops_table(r.ops_before, r.ops_after),
    ]
    if r.source_format != "tflite":
        notes = [f"{k} removed (a no-op at inference)" for k in r.ops_before if k in _REMOVED]
        notes += batchnorm_notes(r.ops_before, r.ops_after)
        if notes:
            lines.append("; ".join(notes) + ".")
    ev = r.evaluation or {}
    orig, conv = ev.get("original") or {}, ev.get("converted") or {}
    if ev:
        lines.append("")
        rows = []
        if orig:
            rows.append(["original (TensorFlow)", human_bytes(orig.get("size_bytes")), _metric(orig),
                         _ms(orig.get("latency_ms_p50")), _ms(orig.get("latency_ms_p90"))])
        rows.append([f"converted ({r.mode}, LiteRT)", human_bytes(conv.get("size_bytes")), _metric(conv),
                     _ms(conv.get("latency_ms_p50")), _ms(conv.get("latency_ms_p90"))])
        metric = "mse" if "mse" in conv else "top-1" if "accuracy" in conv else "quality"
        lines.append(table(rows, ["model", "size", metric, "p50 latency", "p90 latency"]))
        if ev.get("samples"):
            topk = conv.get("top_k") or {}
            extra = ", ".join(f"top-{k} {_pct(v)}" for k, v in topk.items() if k != "1")
            lines.append(f"measured on {ev['samples']} held-out samples from {ev.get('validation_data')}"
                         + (f"; converted {extra}" if extra else ""))
        else:
            lines.append("quality not measured: set quantize.validation_data (an .npz with x and y, or a folder "
                         "of labelled images) to compare the converted model with the original.")
        if "accuracy_drop" in ev:
            lines.append(f"accuracy drop: {ev['accuracy_drop']:.2f} points")
        if "mse_increase_pct" in ev:
            lines.append(f"MSE change: {ev['mse_increase_pct']:+.2f}%")
    return "\n".join(lines + selective_lines(r.selective) + auto_lines(r.auto))


def selective_lines(sel) -> list:
    """int8-selective: which layers stay float, their errors, and what that costs against plain int8."""
    if not sel:
        return []
    lines = ["", f"int8-selective: {len(sel['float_layers'])} of {sel['layers']} layers kept in float"
             + ("" if sel.get("passed") else " (the most allowed; the gate still fails)")]
    if sel["float_layers"]:
        rows = [[d["layer"], d["op"], _num(d.get("relative_rmse")), _num(d.get("rmse_over_scale")), d.get("why", "")]
                for d in sel["float_layers"]]
        lines.append(table(rows, ["float layer", "op", "RMSE / typical channel", "RMSE / scale", "why"]))
    lines.append(f"cost against plain int8: {human_bytes(sel['int8_size_bytes'])} -> {human_bytes(sel['size_bytes'])} "
                 f"({sel['size_cost_bytes']:+d} bytes), p50 latency {_ms(sel.get('int8_latency_ms_p50'))} -> "
                 f"{_ms(sel.get('latency_ms_p50'))}")
    return lines


def auto_lines(auto) -> list:
    """mode auto: the pick, and why each other candidate was not picked."""
    if not auto:
        return []
    rows = [[c["mode"], human_bytes(c.get("size_bytes")), c["status"], c["reason"]] for c in auto["candidates"]]
    return ["", f"auto picked {auto['picked']}:", table(rows, ["mode", "size", "", "why"])]


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _metric(d: dict) -> str:
    if "accuracy" in d:
        return _pct(d["accuracy"])
    if "mse" in d:
        return f"{d['mse']:.6g}"
    return "-"
