"""TFLite conversion for each quantization mode.

| mode     | weights | activations | needs representative data |
|----------|---------|-------------|---------------------------|
| none     | float32 | float32     | no  |
| dynamic  | int8    | float32 (int8 on the fly) | no |
| float16  | float16 | float32     | no  |
| int8     | int8    | int8 (inputs/outputs float32, int8 or uint8) | yes |
| int16x8  | int8    | int16       | yes |
| int8-selective | int8, the worst layers float32 | int8, those layers float32 | yes, and validation data (mlfn.model.selective) |

`runtime_target="tflite-runtime"` asks the converter for op versions that the legacy
tflite-runtime 2.14 interpreter can load (per-tensor rather than per-channel dense layers).
"""
from __future__ import annotations

import re
import warnings
from typing import Callable, Optional, Sequence

from mlfn.errors import ModelError
from mlfn.model.load import LoadedModel, import_tf, quiet_stdout

NEEDS_DATA = ("int8", "int16x8")
IO_TYPES = {"int8": ("float32", "int8", "uint8"), "int16x8": ("float32", "int16")}  # int8-selective: float32


def check_io_types(mode: str, input_type: str, output_type: str) -> None:
    allowed = IO_TYPES.get(mode, ("float32",))
    for key, value in (("quantize.input_type", input_type), ("quantize.output_type", output_type)):
        if value not in allowed:
            raise ModelError(
                f"{key} is {value!r}, which mode {mode} does not support; choose one of: {', '.join(allowed)}."
            )


def convert(model: LoadedModel, mode: str, *, representative: Optional[Sequence] = None,
            input_type: str = "float32", output_type: str = "float32", runtime_target: str = "litert",
            allow_select_tf_ops: bool = False, per_channel: bool = True, progress: Optional[Callable[[str], None]] = None) -> bytes:
    """Convert `model` with the TFLite converter; return the flatbuffer bytes."""
    tf = import_tf()
    check_io_types(mode, input_type, output_type)
    conv = model.converter()
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    if mode != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode in NEEDS_DATA:
        if representative is None:
            raise ModelError(
                f"Mode {mode} needs calibration data; set quantize.representative_data in mlfn.yaml "
                "(an .npy/.npz of model inputs, or a folder of images)."
            )
        conv.representative_dataset = representative_dataset(model, representative)
        builtins = (tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8"
                    else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)
        conv.inference_input_type = getattr(tf, input_type if input_type != "int16" else "int16")
        conv.inference_output_type = getattr(tf, output_type)
    ops = [builtins]
    if allow_select_tf_ops:
        ops = [builtins, tf.lite.OpsSet.SELECT_TF_OPS]
        if mode == "int8":  # int8 kernels where they exist, float builtins and TF ops for the rest
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    conv.target_spec.supported_ops = ops
    if not per_channel and mode != "none":
        # One scale per weight tensor: drops the per-channel scale/zero-point tables (about
        # 12 bytes per output channel, ~0.4 MB on MobileNetV2) at some cost in accuracy.
        conv._experimental_disable_per_channel = True
    if runtime_target == "tflite-runtime":
        # Newer converters emit per-channel FULLY_CONNECTED (op version 12+) that
        # tflite-runtime 2.14 cannot load; per-tensor dense layers stay at older versions.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if progress:
        progress(f"Converting ({mode}) with the TFLite converter")
    try:
        with quiet_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return conv.convert()
    except ModelError:
        raise
    except Exception as e:
        raise conversion_error(e, model.source.origin, allow_select_tf_ops) from None


def representative_dataset(model: LoadedModel, arrays: Sequence):
    """The converter's calibration generator over `arrays` (one array per model input)."""
    # by name where order could differ: the TFLite signature lists inputs by name
    keyed = model.saved_model is not None or len(model.inputs) > 1

    def gen():
        for i in range(len(arrays[0])):
            sample = [a[i:i + 1] for a in arrays]
            if keyed:
                yield {s.name: x for s, x in zip(model.inputs, sample)}
            else:
                yield sample

    return gen


_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"failed to legalize operation 'tf\.(\w+)'"),
    re.compile(r"Some ops are not supported by the native TFLite runtime[^\n]*\n[^\n]*?tf\.(\w+)"),
    re.compile(r"\btf\.(\w+)\b[^\n]*\{device"),
)


def unsupported_ops(message: str) -> list:
    names = []
    for pat in _OP_PATTERNS:
        for m in pat.finditer(message):
            if m.group(1) not in names:
                names.append(m.group(1))
    return names


def conversion_error(exc: Exception, origin: str, allow_select_tf_ops: bool) -> ModelError:
    message = str(exc)
    ops = unsupported_ops(message)
    if ops and not allow_select_tf_ops:
        return ModelError(
            f"{origin} uses TensorFlow op(s) with no TFLite builtin kernel: {', '.join(ops)}; "
            "pass --allow-select-tf-ops (quantize.allow_select_tf_ops: true) to keep them as TensorFlow "
            "(Flex) ops, which needs full TensorFlow in the function image."
        )
    if ops:
        return ModelError(f"{origin} cannot be converted even with SELECT_TF_OPS; unsupported op(s): {', '.join(ops)}.")
    first = next((ln.strip() for ln in message.splitlines() if "error" in ln.lower()), message.strip()[:300])
    return ModelError(f"The TFLite converter failed on {origin}: {first}")
