"""The model runner: a .tflite model on the LiteRT interpreter.

    runner = ModelRunner("model.tflite", num_threads=1, mode="lock")
    outputs = runner.predict({"input": batch})   # {output_name: float32 array, ...}

- Interpreter: `ai_edge_litert.interpreter.Interpreter`, else the legacy
  `tflite_runtime.interpreter.Interpreter` (2.14), imported when a model is loaded.
- Quantized tensors (int8/uint8/int16 with a scale) are quantized on the way in and
  dequantized on the way out with the tensor's own scale and zero point, so callers
  always deal in floats. Inputs already in the tensor's integer dtype pass unchanged.
- Batching: N inputs run as one invoke with the input tensor resized to batch N (models
  whose batch dimension cannot be resized fall back to one invoke per row).
- Concurrency: an interpreter is not thread-safe. `mode="lock"` shares one interpreter
  behind a lock; `mode="per-thread"` keeps a pool of interpreters, one per concurrent
  caller (created on demand up to `max_interpreters`).
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from mlfn_runtime.errors import ConfigurationError, InvalidInput
from mlfn_runtime.tensors import V2_OF_NUMPY, check_finite

INTERPRETER_MODES = ("lock", "per-thread")


def check_interpreter_mode(mode: str, where: str = "serving.interpreter") -> str:
    """`mode` when it is one of INTERPRETER_MODES, else a ConfigurationError naming `where`."""
    if mode not in INTERPRETER_MODES:
        raise ConfigurationError(f"{where} is {mode!r}; choose lock or per-thread.")
    return mode


def interpreter_class():
    """The LiteRT Interpreter class (ai-edge-litert first, tflite-runtime 2.14 second)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ConfigurationError(
                "No LiteRT interpreter is installed: pip install ai-edge-litert (or tflite-runtime)."
            ) from None
    return Interpreter


@dataclass
class TensorInfo:
    """One model input or output, as clients see it (quantization hidden)."""

    name: str
    index: int
    dtype: np.dtype  # the tensor's own dtype
    shape: tuple  # shape signature, -1 for variable dimensions
    scale: float = 0.0
    zero_point: int = 0
    position: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"

    @property
    def client_dtype(self) -> np.dtype:
        """The dtype clients send/receive: float32 for quantized tensors."""
        return np.dtype(np.float32) if self.quantized else self.dtype

    @property
    def datatype(self) -> str:
        return V2_OF_NUMPY.get(self.client_dtype.name, "BYTES")

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _tensor_infos(details: list) -> list:
    out = []
    for pos, d in enumerate(details):
        sig = d.get("shape_signature")
        shape = tuple(int(s) for s in (sig if sig is not None and len(sig) else d["shape"]))
        if shape:  # batch dimension is variable for mlfn (we resize it)
            shape = (-1,) + shape[1:]
        scale, zp = d.get("quantization", (0.0, 0))
        out.append(TensorInfo(name=d["name"], index=d["index"], dtype=np.dtype(d["dtype"]),
                              shape=shape, scale=float(scale), zero_point=int(zp), position=pos))
    return out


class Slot:
    """One interpreter and the batch size its input tensors are currently allocated for."""

    def __init__(self, interpreter, inputs):
        self.interpreter = interpreter
        self.batch = None  # the input shapes, in model input order, its tensors are allocated for
        self.resizable = True


@dataclass
class ModelRunner:
    path: Optional[str] = None
    content: Optional[bytes] = None
    num_threads: int = 1
    mode: str = "lock"  # lock | per-thread
    max_interpreters: int = 8
    name: str = "model"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    load_seconds: float = 0.0

    def __post_init__(self):
        check_interpreter_mode(self.mode)
        t0 = time.perf_counter()
        if self.content is None:
            try:
                with open(self.path, "rb") as f:
                    self.content = f.read()
            except OSError as e:
                raise ConfigurationError(f"model file {self.path} cannot be read: {e.strerror}.") from None
        self._Interpreter = interpreter_class()
        first = self._new_slot()
        self.inputs = _tensor_infos(first.interpreter.get_input_details())
        self.outputs = _tensor_infos(first.interpreter.get_output_details())
        self.aliases = {}  # raw tensor name -> public name
        sig = _signature(first.interpreter)
        if sig:  # public names (and order) from the model's signature: "pixels", "output_0"
            for infos, names in ((self.inputs, sig.get("inputs", {})), (self.outputs, sig.get("outputs", {}))):
                by_index = {t.index: t for t in infos}
                if sorted(names.values()) != sorted(by_index):
                    continue
                for pos, (public, index) in enumerate(names.items()):
                    t = by_index[index]
                    self.aliases[t.name] = public
                    t.name, t.position = public, pos
                infos.sort(key=lambda t: t.position)
        first.batch = None
        self._lock = threading.Lock()
        self._first = first  # the shared slot of mode "lock"
        # free slots of mode "per-thread": SimpleQueue is C code, so taking and returning a
        # slot (twice per request) costs no Python-level Condition and no notify under load
        self._pool: "queue.SimpleQueue[Slot]" = queue.SimpleQueue()
        self._pool.put(first)
        self._created = 1
        self._create_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - t0

    def _new_slot(self) -> Slot:
        try:
            interp = self._Interpreter(model_content=self.content, num_threads=self.num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ConfigurationError(f"model {self.path or self.name} cannot be loaded by LiteRT: {e}") from None
        slot = Slot(interp, _tensor_infos(interp.get_input_details()))
        return slot

    # ------------------------------------------------------------------ public
    @property
    def input_names(self) -> list:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list:
        return [t.name for t in self.outputs]

    def predict(self, inputs) -> dict:
        """Run a batch. `inputs`: one array (single-input models), a list in input order,
        or a dict by input name; every array has the batch dimension first.
        Returns {output name: array with the batch dimension} (floats for quantized outputs)."""
        arrays = self._arrange(inputs)
        n = arrays[0].shape[0] if arrays[0].ndim else 1
        feeds = [self._to_tensor(t, a) for t, a in zip(self.inputs, arrays)]
        slot = self._acquire()  # lease() without the generator's cost on every request
        try:
            return self._invoke(slot, feeds, n)
        finally:
            self._release(slot)

    @property
    def max_concurrent_invokes(self) -> int:
        """How many invokes can run at once: 1 with mode "lock", max_interpreters with "per-thread"."""
        return 1 if self.mode == "lock" else self.max_interpreters

    @property
    def interpreters(self) -> int:
        """Interpreters created so far (a per-thread pool grows on demand up to max_interpreters)."""
        return self._created

    @contextlib.contextmanager
    def lease(self) -> Iterator[Slot]:
        """The interpreter slot of this caller until the block ends: with mode "lock" the
        shared one (under its lock); with "per-thread" a free one from the pool, a new one
        while fewer than max_interpreters exist, else the next one released."""
        slot = self._acquire()
        try:
            yield slot
        finally:
            self._release(slot)

    # ------------------------------------------------------------------ internals
    def _acquire(self) -> Slot:
        if self.mode == "lock":
            self._lock.acquire()
            return self._first
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._create_lock:
                if self._created < self.max_interpreters:
                    self._created += 1
                    return self._new_slot()
            return self._pool.get()

    def _release(self, slot: Slot) -> None:
        if self.mode == "lock":
            self._lock.release()
        else:
            self._pool.put(slot)

    def _arrange(self, inputs) -> list:
        if isinstance(inputs, dict):
            inputs = {self.aliases.get(k, k): v for k, v in inputs.items()}
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise InvalidInput(f"model '{self.name}' needs input '{missing[0]}' (inputs: {', '.join(self.input_names)})")
            extra = [n for n in inputs if n not in self.input_names]
            if extra:
                raise InvalidInput(f"model '{self.name}' has no input '{extra[0]}' (inputs: {', '.join(self.input_names)})")
            arrays = [inputs[n] for n in self.input_names]
        elif isinstance(inputs, (list, tuple)) and len(self.inputs) > 1:
            if len(inputs) != len(self.inputs):
                raise InvalidInput(f"model '{self.name}' takes {len(self.inputs)} inputs, got {len(inputs)}")
            arrays = list(inputs)
        else:
            arrays = [inputs]
        arrays = [np.asarray(a) for a in arrays]
        sizes = {a.shape[0] if a.ndim else 1 for a in arrays}
        if len(sizes) != 1:
            raise InvalidInput(f"model '{self.name}': all inputs need the same batch size, got {sorted(sizes)}")
        return arrays

    def _to_tensor(self, t: TensorInfo, a: np.ndarray) -> np.ndarray:
        want = t.shape[1:]
        got = a.shape[1:]
        if want != got and (len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got))):
            raise InvalidInput(
                f"input '{t.name}' of model '{self.name}' must have shape {_shape(t.shape)}, got {_shape(a.shape)}"
            )
        check_finite(a, f"input '{t.name}' of model '{self.name}'")
        if a.dtype.kind not in "iubf":
            raise InvalidInput(f"input '{t.name}' of model '{self.name}' must be numeric, got {a.dtype}")
        if t.quantized and a.dtype != t.dtype:
            info = np.iinfo(t.dtype)
            q = np.rint(a.astype(np.float32) / np.float32(t.scale)) + t.zero_point
            return np.clip(q, info.min, info.max).astype(t.dtype)
        if a.dtype != t.dtype:
            if t.dtype.kind in "iu" and a.dtype.kind == "f":
                if not np.all(np.equal(np.mod(a, 1), 0)):
                    raise InvalidInput(f"input '{t.name}' of model '{self.name}' takes integers ({t.dtype}), got fractions")
                info = np.iinfo(t.dtype)
                if a.size and (a.min() < info.min or a.max() > info.max):
                    raise InvalidInput(f"input '{t.name}' of model '{self.name}' takes {t.dtype}; values are out of range")
            return np.ascontiguousarray(a, dtype=t.dtype)
        return np.ascontiguousarray(a)

    def _invoke(self, slot: Slot, feeds: list, n: int) -> dict:
        interp = slot.interpreter
        if n != 1 and not slot.resizable:
            return self._invoke_rows(slot, feeds, n)
        shapes = tuple([f.shape for f in feeds])
        if slot.batch != shapes:
            try:
                for t, f in zip(self.inputs, feeds):
                    interp.resize_tensor_input(t.index, list(f.shape), strict=False)
                interp.allocate_tensors()
                slot.batch = shapes
            except (ValueError, RuntimeError):
                if n == 1:
                    raise
                slot.resizable = False
                slot.batch = None
                return self._invoke_rows(slot, feeds, n)
        for t, f in zip(self.inputs, feeds):
            interp.set_tensor(t.index, f)
        interp.invoke()
        out = {}
        for t in self.outputs:
            y = interp.get_tensor(t.index)
            out[t.name] = self._dequantize(t, y)
        return out

    def _invoke_rows(self, slot: Slot, feeds: list, n: int) -> dict:
        rows = [self._invoke(slot, [f[i:i + 1] for f in feeds], 1) for i in range(n)]
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    @staticmethod
    def _dequantize(t: TensorInfo, y: np.ndarray) -> np.ndarray:
        if t.quantized:
            return (y.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)
        return np.array(y, copy=True)


def _signature(interpreter) -> dict:
    """{"inputs": {name: tensor index}, "outputs": {...}} of the serving signature, or {}."""
    try:
        sigs = interpreter._get_full_signature_list() or {}
    except Exception:  # older interpreters, models without signatures
        return {}
    if "serving_default" in sigs:
        return sigs["serving_default"]
    return next(iter(sigs.values())) if len(sigs) == 1 else {}


def _shape(shape) -> str:
    return "[" + ", ".join("N" if i == 0 and s == -1 else ("?" if s == -1 else str(s)) for i, s in enumerate(shape)) + "]"
