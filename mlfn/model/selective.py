"""`quantize.mode: int8-selective`: full int8, except the layers int8 hurts most, kept in float32.

1. The TFLite quantization debugger (`tf.lite.experimental.QuantizationDebugger`)
   calibrates the model and runs its debug build (a NumericVerify op after every quantized
   op) over the calibration samples; `layer_statistics_dump` gives each quantized tensor's
   mean squared error against the float op and its int8 scale.
2. Layers are ranked by RMSE relative to the float activation's typical channel (the
   median over channels of each channel's RMS, measured on the float32 TFLite model). A
   tensor whose range a few outlier channels dominate gets a huge scale, so its ordinary
   channels quantize to nothing: the debugger's usual RMSE/scale stays at the rounding
   level there (about 0.29), the relative RMSE does not. Both are reported.
3. A bounded greedy loop: plain int8 first, then the worst k layers in float
   (`QuantizationDebugOptions(denylisted_nodes=...)`) together with the layers that feed
   them (a float layer still reads an int8 input, with its rounding, unless its producer
   is float too), k = 1, 2, 4, ... up to `quantize.selective_max_float_share` of the
   layers, each measured on the validation data against the gate; the first that passes
   is the result.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from typing import Callable, Optional, Sequence

from mlfn.errors import ModelError
from mlfn.model import litert
from mlfn.model.convert import representative_dataset
from mlfn.model.evaluate import latency, quality_change, scores
from mlfn.model.load import LoadedModel, import_tf, quiet_stdout

RANKED = 5  # the worst layers listed in the report even when none had to stay float


def float_steps(layers: int, max_share: float) -> list:
    """How many layers each attempt keeps in float: 0, 1, 2, 4, ... capped at the share."""
    cap = max(1, math.floor(layers * max_share))
    steps, k = [0], 1
    while k < cap:
        steps.append(k)
        k *= 2
    return steps + [cap]


def convert_selective(model: LoadedModel, representative: Sequence, validation, *, top_k: Sequence[int],
                      max_float_share: float, gate: Callable[[dict], Optional[str]], per_channel: bool = True,
                      say: Callable[[str], None] = lambda _m: None) -> tuple:
    """(tflite bytes, report dict) of the smallest attempt that passes `gate` (a reason
    string when an evaluation fails, else None), or of the last attempt when none does."""
    if len(model.inputs) != 1:
        raise ModelError(f"int8-selective handles models with one input; {model.source.origin} has "
                         f"{len(model.inputs)}. Use quantize.mode int8, or auto without int8-selective in "
                         "quantize.auto_modes.")
    tf = import_tf()
    debugger, float_model = _debugger(tf, model, representative, per_channel, say)
    layers = layer_errors(debugger, float_model, representative[0])
    original = scores(validation.y, model.predict(validation.x), top_k)
    report = {"layers": len(layers), "max_float_share": max_float_share, "attempts": [],
              "worst_layers": layers[:RANKED]}
    content, passed = b"", False
    cap = float_steps(len(layers), max_float_share)[-1]
    floated: list = []
    for k in float_steps(len(layers), max_float_share):
        floated = with_producers(layers, k, cap)
        names = [layer["tensor"] for layer in floated]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names)
        with quiet_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            content = debugger.get_nondebug_quantized_model()
        converted = scores(validation.y, litert.load_runner(content, "the int8-selective model").predict(validation.x),
                           top_k)
        reason = gate({"original": original, "converted": converted, **quality_change(original, converted)})
        report["attempts"].append({"float_layers": len(floated), "size_bytes": len(content), "passed": reason is None,
                                   "accuracy": converted.get("accuracy"), "mse": converted.get("mse"),
                                   "reason": reason})
        say(f"int8 with {len(floated)} layer(s) in float: {len(content)} bytes, " + (reason or "passes the gate"))
        if k == 0:
            int8_content = content
        if reason is None:
            passed = True
            break
    report["passed"] = passed
    report["float_layers"] = floated
    report.update(_cost(int8_content, content, validation))
    return content, report


def _debugger(tf, model: LoadedModel, representative: Sequence, per_channel: bool, say) -> tuple:
    """(a QuantizationDebugger that has run over the calibration samples, the float32 model)."""
    conv = model.converter()
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset(model, representative)
    if not per_channel:
        conv._experimental_disable_per_channel = True

    def samples():
        for i in range(len(representative[0])):
            yield [representative[0][i:i + 1]]

    say("Measuring each layer's int8 error with the TFLite quantization debugger")
    try:
        with quiet_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the debugger's own deprecation and statistics warnings
            debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=samples)
            debugger.run()
            float_model = model.converter().convert()
    except Exception as e:
        raise ModelError(f"The TFLite quantization debugger failed on {model.source.origin}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    return debugger, float_model


def with_producers(layers: list, k: int, cap: int) -> list:
    """The worst `k` layers and the layers that feed them, at most `cap` in all (each dict
    gains "why": "error" or "feeds LAYER")."""
    by_tensor = {layer["tensor"]: layer for layer in layers}
    out: dict = {}
    for layer in layers[:k]:
        for t, why in [(layer["tensor"], "error")] + [(p, f"feeds {layer['layer']}") for p in layer["inputs"]]:
            if t in by_tensor and t not in out and len(out) < cap:
                out[t] = {**by_tensor[t], "why": why}
    return list(out.values())


def _cost(int8: bytes, chosen: bytes, validation) -> dict:
    """What keeping layers in float cost against plain int8: size and single-input latency."""
    sample = [x[:1] for x in validation.x]
    out = {"int8_size_bytes": len(int8), "size_bytes": len(chosen), "size_cost_bytes": len(chosen) - len(int8)}
    for key, content in (("int8_latency_ms_p50", int8), ("latency_ms_p50", chosen)):
        out[key] = latency(litert.load_runner(content, "the int8-selective model"), sample)["latency_ms_p50"]
    return out


def layer_errors(debugger, float_model: bytes, samples) -> list:
    """One dict per quantized tensor, worst first: tensor (its name, for denylisted_nodes),
    layer (a short name), op, relative_rmse, rmse_over_scale."""
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    typical, producers = channel_rms(float_model, samples, [r["tensor_name"] for r in rows])
    out = []
    for r in rows:
        rmse = math.sqrt(max(0.0, float(r["mean_squared_error"])))
        scale = float(r["scale"] or 0.0)
        ref = typical.get(r["tensor_name"])
        out.append({"tensor": r["tensor_name"], "layer": short_name(r["tensor_name"]), "op": r["op_name"],
                    "relative_rmse": round(rmse / ref, 6) if ref else None,
                    "rmse_over_scale": round(rmse / scale, 6) if scale > 0 else None,
                    "inputs": producers.get(r["tensor_name"], [])})
    out.sort(key=lambda d: (d["relative_rmse"] is not None, d["relative_rmse"] or 0.0, d["rmse_over_scale"] or 0.0),
             reverse=True)
    return out


def channel_rms(float_model: bytes, samples, names: list) -> dict:
    """({tensor name: the median over its channels (last axis) of each channel's RMS over
    `samples`, run through the float32 model; channels that are always zero left out},
    {tensor name: the names of the op outputs its op reads})."""
    import numpy as np

    it = litert.interpreter(float_model, delegates=False, preserve_all_tensors=True)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    name_of = {i: n for n, i in index.items()}
    ops = it._get_ops_details()  # the graph; the debugger reads the same data
    made = {t for op in ops for t in op["outputs"]}
    producers = {name_of.get(o): [name_of.get(t) for t in op["inputs"] if t in made] for op in ops for o in op["outputs"]}
    wanted = {n: index[n] for n in names if n in index}
    inp = it.get_input_details()[0]
    sums: dict = {}
    for i in range(len(samples)):
        it.set_tensor(inp["index"], np.asarray(samples[i:i + 1], dtype=inp["dtype"]))
        it.invoke()
        for name, idx in wanted.items():
            t = np.asarray(it.get_tensor(idx), dtype="float64")
            sq = (t.reshape(-1, t.shape[-1]) ** 2).mean(axis=0) if t.ndim else t.reshape(1) ** 2
            sums[name] = sums.get(name, 0.0) + sq
    out = {}
    for name, total in sums.items():
        rms = np.sqrt(np.asarray(total) / len(samples))
        live = rms[rms > 0]
        if live.size:
            out[name] = float(np.median(live))
    return out, producers


def short_name(tensor: str) -> str:
    """'model/narrow/MatMul;model/narrow/Relu' -> 'narrow' (the Keras layer), else the tensor name."""
    first = tensor.split(";")[0]
    parts = first.split("/")
    return parts[1] if len(parts) >= 3 else first
