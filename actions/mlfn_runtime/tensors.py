"""Tensor values of the data plane, checked once for every protocol.

- dtype maps: numpy <-> Open Inference Protocol datatypes, numpy -> TF Serving DT_* names;
- `is_encoded_image`: what counts as an encoded image (base64 text, bytes, `{"b64": ...}`);
- `to_numeric`: a JSON number/nested list -> array (400 when ragged, non-numeric, NaN/Inf);
- `typed_array`: values a client declared with a datatype (OIP v2) -> array of that dtype;
- `as_input_dtype`: an array -> the dtype a model input takes, exactly or a 400;
- `bytes_elements`: Triton's length-prefixed BYTES serialization -> elements;
- `check_finite`, `fit_shape`, `jsonable`.
Protocol modules decode their wire format with these and never re-check what they check."""
from __future__ import annotations

from typing import Any

import numpy as np

from mlfn_runtime.errors import InvalidInput

# Open Inference Protocol datatype -> numpy dtype (BYTES is encoded images, not a dtype)
NUMPY_OF_V2 = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
V2_OF_NUMPY = {dtype.name: v2 for v2, dtype in NUMPY_OF_V2.items()}
# numpy dtype name -> TensorFlow Serving metadata dtype
TF_OF_NUMPY = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "float64": "DT_DOUBLE", "int8": "DT_INT8", "uint8": "DT_UINT8",
    "int16": "DT_INT16", "uint16": "DT_UINT16", "int32": "DT_INT32", "int64": "DT_INT64", "bool": "DT_BOOL",
}


def is_b64_object(v) -> bool:
    """`{"b64": ...}`: TF Serving's (and /predict's) wrapper for binary values."""
    return isinstance(v, dict) and set(v) == {"b64"}


def is_encoded_image(v) -> bool:
    """Base64 text, raw bytes or `{"b64": ...}`: goes through an image pipeline."""
    return isinstance(v, (str, bytes, bytearray)) or is_b64_object(v)


def check_finite(arr: np.ndarray, where: str) -> None:
    if arr.dtype.kind == "c" or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
        raise InvalidInput(f"{where} holds NaN or infinite values")


def to_numeric(value: Any, label: str, batch: bool = False) -> np.ndarray:
    """A JSON number/nested list -> ndarray; 400 naming `label` when ragged, non-numeric or NaN/Inf."""
    if isinstance(value, np.ndarray):
        arr = value  # typed by the client (e.g. an OIP datatype): converted exactly or refused later
    else:
        if isinstance(value, (str, bytes, dict)) or value is None:
            raise InvalidInput(f"'{label}' must be a number or a nested list of numbers, not {jtype(value)}")
        try:
            arr = np.array(value)
        except (ValueError, TypeError, RecursionError):
            raise InvalidInput(f"'{label}' is not a rectangular nested list of numbers") from None
    if arr.dtype.kind not in "biuf":
        what = "a ragged list, or integers beyond 64 bits" if arr.dtype == object else arr.dtype
        raise InvalidInput(f"'{label}' must hold only numbers (got {what})")
    check_finite(arr, f"'{label}'")
    if isinstance(value, np.ndarray):
        pass
    elif arr.dtype == np.float64:  # JSON decimals: read as the nearest float32
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise InvalidInput(f"'{label}' holds numbers beyond the range of FP32 (about 3.4e38)")
    elif arr.dtype == np.int64 and arr.size and arr.min() >= -(2 ** 31) and arr.max() < 2 ** 31:
        arr = arr.astype(np.int32)
    if batch and arr.ndim == 0:
        raise InvalidInput(f"'{label}' must be a list with the batch dimension first")
    if batch and arr.shape[0] == 0:
        raise InvalidInput(f"'{label}' is empty")
    return arr


def as_input_dtype(a: np.ndarray, dtype: np.dtype, label: str, where: str) -> np.ndarray:
    """`a` as the dtype a model input takes (`where` names the input), only when every
    value converts exactly: same datatype; integers in range; floats to a narrower float
    or to an integer, and integers to a float, when each value survives the round trip.
    Booleans are only for BOOL inputs. Anything else is a 400 naming both datatypes."""
    if a.dtype == dtype:
        return a
    got, want = V2_OF_NUMPY.get(a.dtype.name, a.dtype.name), V2_OF_NUMPY.get(dtype.name, dtype.name)
    if (a.dtype.kind == "b") != (dtype.kind == "b"):
        raise InvalidInput(f"'{label}' is {got} but {where} takes {want}; booleans and numbers do not convert")
    with np.errstate(all="ignore"):
        out = a.astype(dtype)
        if a.dtype.kind in "iu" and dtype.kind in "iu":
            info = np.iinfo(dtype)
            inexact = (a < info.min) | (a > info.max)
        else:
            inexact = out.astype(a.dtype) != a
    if np.any(inexact):
        example = a[inexact].flat[0].item()
        raise InvalidInput(f"'{label}' is {got} but {where} takes {want}, and {int(np.count_nonzero(inexact))} of its "
                           f"values (e.g. {example!r}) do not convert exactly")
    return out


def typed_array(values: list, shape: list, datatype: str, where: str) -> np.ndarray:
    """Flat row-major `values` a client declared as `datatype` (an OIP v2 name) -> an array
    of that dtype and `shape`; 400 for fractions in an integer type or out-of-range values."""
    dtype = NUMPY_OF_V2[datatype]
    if any(isinstance(x, (str, dict, type(None))) for x in values):
        raise InvalidInput(f"{where}: 'data' must hold only numbers for datatype {datatype}")
    try:
        arr = np.array(values, dtype=np.float64 if dtype.kind == "f" else None)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{where}: 'data' cannot be read as {datatype}: {e}") from None
    if dtype.kind in "iu":
        if arr.dtype.kind == "f":
            raise InvalidInput(f"{where}: 'data' holds fractions but its datatype is {datatype}")
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InvalidInput(f"{where}: 'data' holds values out of range for {datatype}")
    try:
        arr = arr.astype(dtype).reshape(shape)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{where}: 'data' cannot be read as {datatype}: {e}") from None
    check_finite(arr, where)
    return arr


def buffer_array(data, shape: list, datatype: str, where: str) -> np.ndarray:
    """Raw little-endian tensor bytes (Triton's binary extension) -> an array."""
    dtype = NUMPY_OF_V2[datatype]
    count = int(np.prod(shape)) if shape else 1
    if len(data) != count * dtype.itemsize:
        raise InvalidInput(f"{where} has {len(data)} bytes of binary data but shape {shape} of {datatype} needs "
                           f"{count * dtype.itemsize}")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    check_finite(arr, where)
    return arr


def bytes_elements(chunk, where: str) -> list:
    """Triton's serialized BYTES tensor (a 4-byte little-endian length, then that many bytes,
    per element; REST binary data and gRPC raw contents) -> the elements as bytes."""
    items, pos, end = [], 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput(f"{where} BYTES binary data is truncated")
        n = int.from_bytes(chunk[pos:pos + 4], "little")
        if pos + 4 + n > end:
            raise InvalidInput(f"{where} BYTES element at byte {pos} declares {n} bytes but only {end - pos - 4} follow")
        items.append(bytes(chunk[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return items


def fit_shape(a: np.ndarray, t, label: str, model: str) -> np.ndarray:
    """One input row shaped for tensor `t` (without batch): exact, or equal after dropping
    size-1 dimensions, or flattened for a [N, features] input. Else 400."""
    want = t.shape[1:]
    got = a.shape
    if len(want) == len(got) and all(w in (-1, g) for w, g in zip(want, got)):
        return a
    if -1 not in want:
        if [d for d in got if d != 1] == [d for d in want if d != 1]:
            return a.reshape(want)
        if len(want) == 1 and a.size == want[0]:
            return a.reshape(want)
    fmt = lambda s: "[" + ", ".join("?" if d == -1 else str(d) for d in s) + "]"  # noqa: E731
    raise InvalidInput(f"'{label}' has shape {fmt(got)} but model '{model}' takes {fmt(want)} per input")


def jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if x is None or isinstance(x, (str, int, float)):
        return x
    raise TypeError(f"returned {type(x).__name__} {str(x)[:60]!r}, which JSON cannot hold")


def jtype(v) -> str:
    """A JSON value's kind, for messages."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)
