"""The converted model, run the way the function runs it: the LiteRT interpreter
(`ai-edge-litert`), no TensorFlow. Used to validate, count ops, evaluate and time."""
from __future__ import annotations

import re
from collections import Counter
from typing import Optional

from mlfn.errors import ModelError

# Interpreter bookkeeping, not model ops.
_NOT_OPS = {"DELEGATE"}


def interpreter(model_content: bytes, num_threads: int = 1, delegates: bool = True, preserve_all_tensors: bool = False):
    """preserve_all_tensors keeps every intermediate tensor readable after invoke (slower)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_content=model_content, num_threads=num_threads, experimental_op_resolver_type=kind,
                       experimental_preserve_all_tensors=preserve_all_tensors)


def check_tflite(content: bytes, where: str) -> None:
    """Raise ModelError unless `content` is a TFLite flatbuffer the interpreter accepts."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ModelError(f"{where} is not a TFLite model (no TFL3 flatbuffer identifier); it may be corrupt or truncated.")
    try:
        it = interpreter(content, delegates=False)
        it.allocate_tensors()
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Select TensorFlow op" in str(e) or "Flex" in str(e):
            flex = ", ".join(flex_ops(op_counts(content))) or "unknown"
            raise ModelError(
                f"{where} uses TensorFlow (Flex) ops ({flex}), which the LiteRT interpreter cannot run "
                "without full TensorFlow."
            ) from None
        node = re.search(r"Node number (\d+) \((\w+)\) failed to prepare", str(e))
        if node:
            check = re.search(r"(\w+ was not true)", str(e))
            why = f" ({check.group(1)})" if check else ""
            raise ModelError(
                f"{where} cannot be loaded by the LiteRT interpreter: node {node.group(1)} ({node.group(2)}) "
                f"failed to prepare{why}; try another quantization mode."
            ) from None
        raise ModelError(f"{where} cannot be loaded by the LiteRT interpreter: {msg}") from None


def op_counts(content: bytes) -> dict:
    """TFLite op types and how often each appears, e.g. {"CONV_2D": 2, "FULLY_CONNECTED": 2}."""
    try:
        it = interpreter(content, delegates=False)
        details = it._get_ops_details()  # public enough: the analyzer uses the same data
    except Exception:
        return {}
    counts = Counter(d["op_name"] for d in details if d.get("op_name") not in _NOT_OPS)
    return dict(sorted(counts.items()))


def flex_ops(ops: dict) -> list:
    """TensorFlow ops kept by SELECT_TF_OPS (they appear as FlexXxx in the TFLite model)."""
    return [k[len("Flex"):] for k in ops if k.startswith("Flex")]


def io_types(content: bytes) -> tuple:
    it = interpreter(content, delegates=False)
    ins = [d["dtype"].__name__ for d in it.get_input_details()]
    outs = [d["dtype"].__name__ for d in it.get_output_details()]
    return ins, outs


class Runner:
    """Runs one sample at a time, quantizing inputs / dequantizing outputs of integer
    models with the model's own scale and zero-point (as the function's runner does)."""

    def __init__(self, content: bytes, num_threads: int = 1):
        self.it = interpreter(content, num_threads=num_threads)
        self.it.allocate_tensors()
        self.inputs = self.it.get_input_details()
        self.output = self.it.get_output_details()[0]

    def _fit(self, detail, x):
        import numpy as np

        want = detail["dtype"]
        shape = tuple(x.shape)
        if tuple(detail["shape"]) != shape:
            self.it.resize_tensor_input(detail["index"], shape)
            self.it.allocate_tensors()
            self.inputs = self.it.get_input_details()
            self.output = self.it.get_output_details()[0]
        scale, zero = detail["quantization"]
        if np.dtype(want).kind in "iu" and scale:
            info = np.iinfo(want)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return x.astype(want, copy=False)

    def order(self, names) -> None:
        """Match interpreter inputs to model input names (the converter names them
        `serving_default_<name>:0`; its order need not follow the model's)."""
        def find(name):
            for d in self.inputs:
                base = d["name"].split(":")[0]
                if base == name or base.endswith("_" + name):
                    return d["index"]
            return None

        idx = [find(n) for n in names]
        if len(names) == len(self.inputs) and None not in idx and len(set(idx)) == len(idx):
            self._order = idx

    def _details(self):
        order = getattr(self, "_order", None)
        if not order:
            return self.inputs
        by_index = {d["index"]: d for d in self.inputs}
        return [by_index[i] for i in order]

    def __call__(self, xs: list):
        import numpy as np

        for detail, x in zip(self._details(), xs):
            self.it.set_tensor(detail["index"], self._fit(detail, np.asarray(x)))
        self.it.invoke()
        y = self.it.get_tensor(self.output["index"])
        scale, zero = self.output["quantization"]
        if np.dtype(self.output["dtype"]).kind in "iu" and scale:
            y = (y.astype("float32") - zero) * scale
        return np.array(y)

    def predict(self, xs: list):
        """Predictions for every row of `xs`, one input at a time."""
        import numpy as np

        n = len(xs[0])
        return np.concatenate([self([x[i:i + 1] for x in xs]) for i in range(n)], axis=0)


def load_runner(content: bytes, where: str, num_threads: Optional[int] = 1) -> Runner:
    try:
        return Runner(content, num_threads=num_threads or 1)
    except Exception as e:
        raise ModelError(f"{where} cannot be run by the LiteRT interpreter: {e}") from None
