"""Loading a model with TensorFlow (imported here, lazily) for conversion and evaluation.

`load_model(source, signature)` returns a `LoadedModel` that knows its inputs, can
predict a batch, counts its ops (Keras layers, or the frozen TF graph of a SavedModel
signature) and makes a `tf.lite.TFLiteConverter`. `.tflite` files are not loaded here:
they pass through conversion untouched (see mlfn.model.litert).
"""
from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from mlfn.errors import ModelError
from mlfn.model.data import InputSpec
from mlfn.model.source import ModelSource

# Graph plumbing that says nothing about the model's computation.
_PLUMBING_OPS = {"Placeholder", "Const", "Identity", "NoOp", "IdentityN", "ReadVariableOp", "VarHandleOp"}
_PLUMBING_LAYERS = {"InputLayer"}


def import_tf():
    """TensorFlow, quietly (its C++ start-up chatter is not the user's business)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise ModelError(
            "Converting models needs TensorFlow; install it with: pip install 'mlfn[convert]'."
        ) from None
    tf.get_logger().setLevel("ERROR")
    return tf


@contextlib.contextmanager
def quiet_stdout():
    """TF/Keras print export chatter to stdout while converting; stdout is for results
    (--output json), and the chatter helps nobody, so it is dropped."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class LoadedModel:
    source: ModelSource
    signature: str
    inputs: list  # list[InputSpec]
    output_shape: tuple = ()
    keras_model: Any = None
    saved_model: Any = None
    function: Any = None  # the SavedModel signature function
    output_key: Optional[str] = None
    _ops: Optional[dict] = field(default=None, repr=False)

    def predict(self, xs: list, batch_size: int = 256):
        """The first output for inputs `xs` (one array per input), as numpy."""
        import numpy as np

        tf = import_tf()
        n = len(xs[0])
        outs = []
        for start in range(0, n, batch_size):
            chunk = [x[start:start + batch_size] for x in xs]
            if self.keras_model is not None:
                y = self.keras_model(chunk if len(chunk) > 1 else chunk[0], training=False)
                if isinstance(y, (list, tuple)):
                    y = y[0]
                elif isinstance(y, dict):
                    y = y[sorted(y)[0]]
            else:
                kwargs = {s.name: tf.constant(c) for s, c in zip(self.inputs, chunk)}
                res = self.function(**kwargs)
                y = res[self.output_key]
            outs.append(np.asarray(y))
        return np.concatenate(outs, axis=0)

    def ops(self) -> dict:
        """Op counts before conversion: Keras layer types, or TF graph op types."""
        if self._ops is None:
            if self.keras_model is not None:
                counts = Counter(type(layer).__name__ for layer in _all_layers(self.keras_model))
                self._ops = {k: v for k, v in sorted(counts.items()) if k not in _PLUMBING_LAYERS}
            else:
                self._ops = _graph_ops(self.function)
        return self._ops

    def converter(self):
        tf = import_tf()
        with quiet_stdout():
            if self.keras_model is not None:
                return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)
            return tf.lite.TFLiteConverter.from_saved_model(str(self.source.path), signature_keys=[self.signature])


def _all_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and getattr(layer, "layers", None):
            out += _all_layers(layer)
        else:
            out.append(layer)
    return out


def _graph_ops(function) -> dict:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        frozen = convert_variables_to_constants_v2(function)
        nodes = frozen.graph.as_graph_def().node
    except Exception:  # pragma: no cover - exotic graphs: count what is there
        nodes = function.graph.as_graph_def().node
    counts = Counter(n.op for n in nodes if n.op not in _PLUMBING_OPS)
    return dict(sorted(counts.items()))


def _spec_from_tensor(name: str, shape, dtype) -> InputSpec:
    dims = list(shape)[1:] if len(shape) else []
    return InputSpec(name=name, shape=tuple(None if d is None else int(d) for d in dims), dtype=str(dtype))


def load_model(source: ModelSource, signature: str = "serving_default") -> LoadedModel:
    tf = import_tf()
    if source.format == "tflite":
        raise ModelError(f"{source.origin} is already a .tflite model; it is passed through, not loaded with TensorFlow.")
    if source.format in ("keras", "h5"):
        try:
            import keras

            with quiet_stdout():
                model = keras.models.load_model(str(source.path), compile=False)
        except Exception as e:
            raise ModelError(f"Cannot load Keras model {source.origin}: {_short(e)}") from None
        specs = []
        for t in model.inputs:
            name = getattr(t, "name", None) or "input"
            specs.append(_spec_from_tensor(name.split(":")[0], t.shape, _np_dtype(t.dtype)))
        out = model.outputs[0].shape if model.outputs else ()
        return LoadedModel(source, signature, specs, tuple(out), keras_model=model)
    try:
        loaded = tf.saved_model.load(str(source.path))
    except Exception as e:
        raise ModelError(f"Cannot load SavedModel {source.origin}: {_short(e)}") from None
    sigs = list(loaded.signatures.keys())
    if signature not in loaded.signatures:
        raise ModelError(
            f"SavedModel {source.origin} has no signature '{signature}'; "
            f"set model.signature to one of: {', '.join(sigs) or '(none)'}."
        )
    fn = loaded.signatures[signature]
    _, kw = fn.structured_input_signature
    specs = [_spec_from_tensor(k, v.shape, v.dtype.as_numpy_dtype.__name__) for k, v in sorted(kw.items())]
    outputs = fn.structured_outputs
    key = sorted(outputs)[0] if isinstance(outputs, dict) else None
    out_shape = tuple(outputs[key].shape) if key else ()
    return LoadedModel(source, signature, specs, out_shape, saved_model=loaded, function=fn, output_key=key)


def _np_dtype(dtype) -> str:
    import numpy as np

    name = getattr(dtype, "name", None) or str(dtype)
    try:
        return np.dtype(name).name
    except TypeError:
        return "float32"


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = msg if len(msg) < 300 else msg[:297] + "..."
    return msg.rstrip(".") + "."
