"""Representative (calibration) and validation data for converting and gating a model.

Representative data: a `.npy` array, an `.npz` (the array named after the model input,
else `x`, else the first one), or a folder of images run through the function's own
pre-processing (`mlfn_runtime.pipeline.Pipeline`), so int8 ranges are calibrated on
exactly what the function will feed the model.

Validation data: an `.npz` with `x` and `y`, or an image folder with one sub-folder per
label (`val/3/a.png` is a 3); labels map to output indices through the labels file when
there is one, else numeric folder names are indices, else sorted folder names are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from mlfn.errors import ModelError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class InputSpec:
    name: str
    shape: tuple  # without the batch dimension; None for unknown sizes
    dtype: str  # numpy dtype name


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pipeline(pre_steps: Sequence, base_dir: Path, what: str):
    try:
        from mlfn_runtime.errors import ConfigurationError
        from mlfn_runtime.pipeline import Pipeline
    except ImportError as e:  # pragma: no cover - the runtime ships with mlfn
        raise ModelError(f"{what} is an image folder, but mlfn_runtime.pipeline cannot be imported ({e}).") from None
    try:
        pipe = Pipeline(list(pre_steps or []), str(base_dir), stage="pre")
    except ValueError as e:
        raise ModelError(f"pipeline.pre in mlfn.yaml is invalid: {e}") from None
    except ConfigurationError as e:  # e.g. MLFN_MAX_IMAGE_PIXELS is not a number
        raise ModelError(f"{what} cannot be pre-processed: {e}") from None
    if not pipe.takes_images:
        raise ModelError(f"{what} is a folder of images, but pipeline.pre does not start with decode_image; "
                         "add decode_image (then convert, resize, scale) to pipeline.pre, or give an .npy/.npz "
                         "of model inputs.")
    return pipe


def _run_pipeline(pipe, path: Path):
    import numpy as np

    data = path.read_bytes()
    try:
        out = pipe(data)
    except Exception as e:  # a corrupt image or a step that does not fit
        raise ModelError(f"Pre-processing {path} with pipeline.pre failed: {e}") from None
    return np.asarray(out)


def load_array_file(path: Path, input_names: Sequence[str] = (), what: str = "data") -> "dict":
    """Arrays from .npy (one array, keyed by the first input name) or .npz (all arrays)."""
    import numpy as np

    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
            return {(input_names[0] if input_names else "x"): arr}
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise ModelError(f"{what} {path} cannot be read as a NumPy file: {e}") from None
    raise ModelError(f"{what} {path} must be a .npy or .npz file, or a folder of images.")


def check_inputs(arrays: dict, specs: Sequence[InputSpec], where: str) -> list:
    """Arrays ordered like the model inputs, shapes and dtypes checked."""
    import numpy as np

    out = []
    for i, spec in enumerate(specs):
        arr = arrays.get(spec.name)
        if arr is None and len(specs) == 1:
            arr = arrays.get("x", next(iter(arrays.values()), None))
        if arr is None:
            raise ModelError(f"{where} has no array for model input '{spec.name}' (has: {', '.join(arrays) or 'none'}).")
        arr = np.asarray(arr)
        if arr.dtype.kind not in "fiub":
            raise ModelError(f"{where} has dtype {arr.dtype}; model input '{spec.name}' needs numbers ({spec.dtype}).")
        want = tuple(spec.shape)
        if arr.ndim == len(want):  # a single sample without the batch dimension
            arr = arr[None]
        got = tuple(arr.shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
            raise ModelError(
                f"{where} has samples of shape {got}, but model input '{spec.name}' expects {shown}."
            )
        if np.dtype(spec.dtype).kind == "f" and arr.dtype.kind != "f":
            raise ModelError(
                f"{where} has dtype {arr.dtype}, but model input '{spec.name}' is {spec.dtype}; "
                "save the data as float32 (already pre-processed)."
            )
        out.append(arr.astype(spec.dtype, copy=False))
    n = {len(a) for a in out}
    if len(n) > 1:
        raise ModelError(f"{where} has different sample counts per input: {sorted(n)}.")
    return out


def load_representative(path: str, specs: Sequence[InputSpec], samples: int,
                        pre_steps: Sequence = (), base_dir: Optional[Path] = None,
                        progress: Optional[Callable[[str], None]] = None) -> list:
    """Calibration inputs: a list (one per model input) of arrays with up to `samples` rows."""
    import numpy as np

    p = Path(path)
    where = f"quantize.representative_data {path}"
    if not p.exists():
        raise ModelError(f"{where} does not exist.")
    if p.is_dir():
        files = _image_files(p)
        if not files:
            raise ModelError(f"{where} is a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        if len(specs) != 1:
            raise ModelError(f"{where} is an image folder, but the model has {len(specs)} inputs; use an .npz.")
        pipe = _pipeline(pre_steps, base_dir or p, where)
        files = files[:samples]
        if progress:
            progress(f"Pre-processing {len(files)} representative image(s) from {p}")
        batch = np.stack([_batchless(_run_pipeline(pipe, f), specs[0]) for f in files])
        arrays = check_inputs({specs[0].name: batch}, specs, where)
    else:
        arrays = check_inputs(load_array_file(p, [s.name for s in specs], where), specs, where)
    if len(arrays[0]) == 0:
        raise ModelError(f"{where} holds no samples.")
    return [a[:samples] for a in arrays]


def _batchless(arr, spec: InputSpec):
    if arr.ndim == len(spec.shape) + 1 and arr.shape[0] == 1:
        return arr[0]
    return arr


@dataclass
class ValidationSet:
    x: list  # one array per model input
    y: "object"  # numpy array: int labels (classification) or float targets (regression)
    source: str
    label_names: Optional[list] = None


def load_validation(path: str, specs: Sequence[InputSpec], pre_steps: Sequence = (),
                    base_dir: Optional[Path] = None, labels: Optional[list] = None,
                    progress: Optional[Callable[[str], None]] = None) -> ValidationSet:
    import numpy as np

    p = Path(path)
    where = f"quantize.validation_data {path}"
    if not p.exists():
        raise ModelError(f"{where} does not exist.")
    if p.is_dir():
        subdirs = sorted(d for d in p.iterdir() if d.is_dir())
        if not subdirs:
            raise ModelError(f"{where} must hold one sub-folder of images per label (e.g. {p}/3/a.png).")
        names = [d.name for d in subdirs]
        if labels:
            unknown = [n for n in names if n not in labels]
            if unknown:
                raise ModelError(f"{where} has label folders not in the labels file: {', '.join(unknown)}.")
            index = {n: labels.index(n) for n in names}
        elif all(n.isdigit() for n in names):
            index = {n: int(n) for n in names}
        else:
            index = {n: i for i, n in enumerate(names)}
        pipe = _pipeline(pre_steps, base_dir or p, where)
        xs, ys = [], []
        for d in subdirs:
            for f in _image_files(d):
                xs.append(_batchless(_run_pipeline(pipe, f), specs[0]))
                ys.append(index[d.name])
        if not xs:
            raise ModelError(f"{where} has label folders but no images in them.")
        if progress:
            progress(f"Loaded {len(xs)} validation image(s) in {len(subdirs)} label folder(s)")
        x = check_inputs({specs[0].name: np.stack(xs)}, specs, where)
        return ValidationSet(x=x, y=np.asarray(ys), source=str(p), label_names=labels or names)
    arrays = load_array_file(p, [s.name for s in specs], where)
    if "y" not in arrays:
        raise ModelError(f"{where} must hold arrays 'x' (inputs) and 'y' (labels or targets); it has: {', '.join(arrays)}.")
    y = np.asarray(arrays.pop("y"))
    x = check_inputs(arrays, specs, where)
    if len(y) != len(x[0]):
        raise ModelError(f"{where} has {len(x[0])} inputs but {len(y)} labels.")
    return ValidationSet(x=x, y=y, source=str(p), label_names=labels)
