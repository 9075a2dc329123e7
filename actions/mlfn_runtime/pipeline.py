"""Pre- and post-processing steps, applied to one input (or one prediction) at a time.

A pipeline is a list of steps, each a one-key mapping `{name: {params}}` or a bare
`name` (see actions/README.md). Pre-processing turns what a client sent (an encoded
image, or an array) into one model input without the batch dimension; post-processing
turns one row of the model's output into what the client gets back.

    pipe = Pipeline([{"decode_image": {}}, {"convert": {"mode": "L"}},
                     {"resize": {"width": 8, "height": 8}}, {"scale": {"factor": 1 / 255}}])
    x = pipe(png_bytes)          # float32 array (8, 8, 1)

Image steps work on Pillow images; Pillow is imported only when a pipeline holds one.
After image steps, `to_array` is implied before the first array step and at the end.
Errors caused by the input raise `InvalidInput` (HTTP 400); a bad pipeline raises
`ValueError` naming the step and the parameter (`validate_steps`).
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import sys
from typing import Any, Callable, Optional

import numpy as np

from mlfn_runtime.errors import ConfigurationError, CustomStepError, InvalidInput

PRE = "pre"
POST = "post"

RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos", "area")
KEEP_ASPECT = ("false", "pad", "crop")
PIL_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F")


def _env_max_pixels() -> Optional[int]:
    """MLFN_MAX_IMAGE_PIXELS, default 40 M (~120 MB as RGB); None when it is not a count
    (DecodeImage then refuses to load, with a sentence rather than a traceback)."""
    value = (os.environ.get("MLFN_MAX_IMAGE_PIXELS") or "").strip()
    if not value:
        return 40_000_000
    return int(value) if value.isdigit() and int(value) > 0 else None


MAX_IMAGE_PIXELS = _env_max_pixels()
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


# --------------------------------------------------------------------------- params

class _Param:
    """One step parameter: a checker returning the normalised value or raising ValueError."""

    def __init__(self, check: Callable[[Any], Any], required: bool = False, default: Any = None, what: str = ""):
        self.check, self.required, self.default, self.what = check, required, default, what


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("a number")
    if not np.isfinite(v):
        raise ValueError("a finite number")
    return float(v)


def _positive_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("a positive integer")
    return v


def _choice(choices):
    def check(v):
        if v is False and "false" in choices:
            return "false"
        if not isinstance(v, str) or v.lower() not in [c.lower() for c in choices]:
            raise ValueError("one of " + ", ".join(choices))
        return next(c for c in choices if c.lower() == v.lower())

    return check


def _numbers(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [_number(v)]
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError("a number or a non-empty list of numbers")
    return [_number(x) for x in v]


def _nonzero_numbers(v):
    out = _numbers(v)
    if any(x == 0 for x in out):
        raise ValueError("a non-zero number or a list of non-zero numbers")
    return out


def _pad_value(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return tuple(v)
    raise ValueError("a number or a list of numbers (one per channel)")


def _string(v):
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _py_file(v):
    v = _string(v)
    if not v.endswith(".py"):
        raise ValueError("a Python file name ending in .py")
    return v


# --------------------------------------------------------------------------- steps

class Step:
    """A pipeline step. Subclasses set `name`, `stages`, `params`, and implement `__call__`."""

    name = ""
    stages: tuple = (PRE, POST)
    image = False  # works on Pillow images (pre-processing before to_array)
    params: dict = {}

    def __init__(self, params: dict, pipeline: "Pipeline"):
        for key, value in params.items():
            setattr(self, key, value)
        self.pipeline = pipeline
        self.setup()

    def setup(self) -> None:
        pass

    def __call__(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"<step {self.name}>"


def _pil():
    from PIL import Image  # lazy: only pipelines with image steps pay for Pillow

    return Image, None


def _imageops():
    from PIL import ImageOps  # lazy: only exif_transpose and keep_aspect pad/crop need it

    return ImageOps


class DecodeImage(Step):
    """Base64 text or raw bytes (any format Pillow reads) -> a Pillow image."""

    name, stages, image = "decode_image", (PRE,), True

    def setup(self):
        if MAX_IMAGE_PIXELS is None:
            raise ConfigurationError(f"MLFN_MAX_IMAGE_PIXELS is {os.environ.get('MLFN_MAX_IMAGE_PIXELS')!r}; "
                                     "set a positive number of pixels, or unset it for 40000000.")
        self.Image, _ = _pil()
        self.draft_size = None  # set by Pipeline when a resize follows: JPEG DCT scaling

    def __call__(self, x):
        Image = self.Image
        if isinstance(x, Image.Image):
            return x
        if isinstance(x, str):
            x = b64decode(x)
        elif isinstance(x, dict) and set(x) == {"b64"}:
            if not isinstance(x["b64"], str):
                raise InvalidInput(f"'b64' must be base64 text, not {_kind(x['b64'])}")
            x = b64decode(x["b64"])
        if not isinstance(x, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"expected an encoded image (base64 text or bytes), got {_kind(x)}")
        try:
            img = Image.open(io.BytesIO(x))
            if self.draft_size and img.format == "JPEG":
                img.draft(img.mode, self.draft_size)
            if img.width * img.height > MAX_IMAGE_PIXELS:  # before decoding: no memory blow-up
                raise InvalidInput(
                    f"image is {img.width}x{img.height} pixels; at most {MAX_IMAGE_PIXELS} are decoded (MLFN_MAX_IMAGE_PIXELS)"
                )
            img.load()
        except InvalidInput:
            raise
        except Image.DecompressionBombError as e:
            raise InvalidInput(f"image is too large to decode ({e})") from None
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
            raise InvalidInput(f"is not an image Pillow can read ({e.__class__.__name__}: {e})") from None
        return img


class ExifTranspose(Step):
    """Rotate/flip the image as its EXIF Orientation tag says."""

    name, stages, image = "exif_transpose", (PRE,), True

    def setup(self):
        _pil()
        self.ImageOps = _imageops()

    def __call__(self, img):
        return self.ImageOps.exif_transpose(img)


class Convert(Step):
    """Pillow mode conversion, e.g. `convert {mode: L}` for grayscale or `RGB`."""

    name, stages, image = "convert", (PRE,), True
    params = {"mode": _Param(_choice(PIL_MODES), required=True, what="mode")}

    def setup(self):
        _pil()

    def __call__(self, img):
        if img.mode == self.mode:
            return img
        if img.mode in ("RGBA", "LA", "PA") and self.mode in ("RGB", "L"):
            # composite transparent images on white instead of black garbage in the RGB data
            Image, _ = _pil()
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
            return self(img)
        return img.convert(self.mode)


class Resize(Step):
    """Resize to width x height; `keep_aspect: pad` letterboxes, `crop` center-crops."""

    name, stages, image = "resize", (PRE,), True
    params = {
        "width": _Param(_positive_int, required=True),
        "height": _Param(_positive_int, required=True),
        "method": _Param(_choice(RESIZE_METHODS), default="bilinear"),
        "keep_aspect": _Param(_choice(KEEP_ASPECT), default="false"),
        "pad_value": _Param(_pad_value, default=0),
    }

    def setup(self):
        Image, _ = _pil()
        self.ImageOps = _imageops() if self.keep_aspect != "false" else None
        R = Image.Resampling
        self.resample = {"bilinear": R.BILINEAR, "nearest": R.NEAREST, "bicubic": R.BICUBIC,
                         "lanczos": R.LANCZOS, "area": R.BOX}[self.method]

    def __call__(self, img):
        size = (self.width, self.height)
        if img.size == size:
            return img
        if self.keep_aspect == "crop":
            return self.ImageOps.fit(img, size, method=self.resample)
        if self.keep_aspect == "pad":
            color = self.pad_value
            if isinstance(color, tuple) and len(img.getbands()) == 1:
                color = color[0]
            elif isinstance(color, (int, float)) and len(img.getbands()) > 1:
                color = (color,) * len(img.getbands())
            if img.mode in ("F", "I") and isinstance(color, float):
                pass
            elif isinstance(color, tuple):
                color = tuple(int(c) for c in color)
            else:
                color = int(color)
            return self.ImageOps.pad(img, size, method=self.resample, color=color)
        return img.resize(size, self.resample)


class ToArray(Step):
    """Pillow image -> float32 numpy array HWC (grayscale gets a channel axis of 1)."""

    name, stages = "to_array", (PRE,)

    def __call__(self, x):
        return to_array(x)


class Scale(Step):
    """x * factor + offset, e.g. `scale {factor: 0.00392156862745098}` maps 0..255 to 0..1."""

    name, stages = "scale", (PRE,)
    params = {"factor": _Param(_number, default=1.0), "offset": _Param(_number, default=0.0)}

    def __call__(self, x):
        x = to_array(x)
        return (x * np.float32(self.factor) + np.float32(self.offset)).astype(np.float32, copy=False)


class Normalize(Step):
    """(x - mean) / std per channel (one value, or one per channel)."""

    name, stages = "normalize", (PRE,)
    params = {"mean": _Param(_numbers, required=True), "std": _Param(_nonzero_numbers, required=True)}

    def setup(self):
        self.channel_axis = -1  # Pipeline sets 0 after `layout {to: nchw}`

    def __call__(self, x):
        x = to_array(x)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        n = max(len(self.mean), len(self.std))
        if n > 1 and (x.ndim == 0 or x.shape[self.channel_axis] != n):
            raise InvalidInput(
                f"normalize has {n} mean/std values but the input has {x.shape[self.channel_axis] if x.ndim else 0} channels"
            )
        if self.channel_axis == 0 and x.ndim >= 2:
            shape = (-1,) + (1,) * (x.ndim - 1)
            mean, std = mean.reshape(shape), std.reshape(shape)
        return ((x - mean) / std).astype(np.float32, copy=False)


class ChannelOrder(Step):
    """Reorder color channels: `order: bgr` for models trained on OpenCV-loaded images."""

    name, stages = "channel_order", (PRE,)
    params = {"order": _Param(_choice(("rgb", "bgr")), required=True)}

    def setup(self):
        self.channel_axis = -1

    def __call__(self, x):
        x = to_array(x)
        if self.order == "rgb" or x.ndim == 0:
            return x
        n = x.shape[self.channel_axis]
        if n not in (3, 4):
            raise InvalidInput(f"channel_order bgr needs 3 or 4 channels, the input has {n}")
        idx = [2, 1, 0] + ([3] if n == 4 else [])
        return np.take(x, idx, axis=self.channel_axis)


class Layout(Step):
    """`layout {to: nchw}` moves channels first (PyTorch-style models); nhwc is the default."""

    name, stages = "layout", (PRE,)
    params = {"to": _Param(_choice(("nhwc", "nchw")), required=True)}

    def setup(self):
        self.source = "nhwc"  # Pipeline sets the layout the data has when it gets here

    def __call__(self, x):
        x = to_array(x)
        if self.to == self.source or x.ndim < 2:
            return x
        if x.ndim == 2:
            x = x[..., None] if self.source == "nhwc" else x[None]
        return np.ascontiguousarray(np.moveaxis(x, -1, 0) if self.to == "nchw" else np.moveaxis(x, 0, -1))


class Cast(Step):
    """Cast to a numpy dtype (`cast {dtype: uint8}`)."""

    name, stages = "cast", (PRE,)
    params = {"dtype": _Param(_choice(DTYPES), required=True)}

    def __call__(self, x):
        x = to_array(x)
        dt = np.dtype(self.dtype)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            x = np.clip(np.rint(x), info.min, info.max)
        return x.astype(dt)


class Custom(Step):
    """A plain function from a Python file in the function folder: `custom {file, function}`."""

    name = "custom"
    params = {"file": _Param(_py_file, required=True), "function": _Param(_string, required=True)}

    def setup(self):
        self.fn, self.path = load_custom(self.pipeline.base_dir, self.file, self.function)

    def __call__(self, x):
        try:
            return self.fn(x)
        except InvalidInput:
            raise
        except Exception as e:
            raise CustomStepError(
                f"custom step '{self.function}' ({self.file}{_user_line(e, self.path)}) raised "
                f"{e.__class__.__name__}: {e}",
                status=400 if isinstance(e, ValueError) else 500,
            ) from e


# ---- post-processing

class Softmax(Step):
    name, stages = "softmax", (POST,)

    def __call__(self, x):
        x = _scores(x)
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)


class Sigmoid(Step):
    name, stages = "sigmoid", (POST,)

    def __call__(self, x):
        x = _scores(x)
        with np.errstate(over="ignore"):  # exp(-x) -> inf gives the right limit, 0
            return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


class Argmax(Step):
    """The best class: `{"index", "label", "score"}`."""

    name, stages = "argmax", (POST,)
    params = {"labels": _Param(_string)}

    def setup(self):
        self.names = self.pipeline.load_labels(self.labels)

    def __call__(self, x):
        x = _scores(x).reshape(-1)
        i = int(np.argmax(x))
        return {"label": self.pipeline.label(self.names, i), "index": i, "score": float(x[i])}


class TopK(Step):
    """The k best classes with labels: `{"label", "index", "score", "top_k": [...]}`."""

    name, stages = "top_k", (POST,)
    params = {"k": _Param(_positive_int, default=5), "labels": _Param(_string)}

    def setup(self):
        self.names = self.pipeline.load_labels(self.labels)

    def __call__(self, x):
        x = _scores(x).reshape(-1)
        k = min(self.k, x.size)
        idx = np.argpartition(-x, k - 1)[:k] if k < x.size else np.arange(x.size)
        idx = idx[np.argsort(-x[idx], kind="stable")]
        top = [{"label": self.pipeline.label(self.names, int(i)), "index": int(i), "score": float(x[i])} for i in idx]
        return {**top[0], "top_k": top}


class Threshold(Step):
    """Keep what scores at least `value`.

    On a single score: `{"score", "positive"}`; on several (multi-label): `{"positive":
    [{"label", "index", "score"}, ...]}`; after top_k/argmax: filters those entries."""

    name, stages = "threshold", (POST,)
    params = {"value": _Param(_number, default=0.5), "labels": _Param(_string)}

    def setup(self):
        self.names = self.pipeline.load_labels(self.labels)

    def __call__(self, x):
        v = self.value
        if isinstance(x, dict) and "score" in x:
            out = dict(x)
            if "top_k" in out:
                out["top_k"] = [t for t in out["top_k"] if t["score"] >= v]
            if x["score"] < v:
                out.update(label=None, index=None)
            return out
        x = _scores(x).reshape(-1)
        if x.size == 1:
            return {"score": float(x[0]), "positive": bool(x[0] >= v)}
        hits = [int(i) for i in np.flatnonzero(x >= v)]
        hits.sort(key=lambda i: -x[i])
        return {"positive": [{"label": self.pipeline.label(self.names, i), "index": i, "score": float(x[i])} for i in hits]}


class Identity(Step):
    name = "identity"

    def __call__(self, x):
        return x


STEPS: dict = {cls.name: cls for cls in (
    DecodeImage, ExifTranspose, Convert, Resize, ToArray, Scale, Normalize, ChannelOrder, Layout, Cast,
    Softmax, Sigmoid, Argmax, TopK, Threshold, Identity, Custom,
)}
PRE_STEPS = tuple(n for n, c in STEPS.items() if PRE in c.stages)
POST_STEPS = tuple(n for n, c in STEPS.items() if POST in c.stages)


# --------------------------------------------------------------------------- validation

def parse_steps(steps: Any, stage: Optional[str] = None) -> list:
    """[(name, params-with-defaults, StepClass), ...]; ValueError naming step and parameter."""
    where = f"{stage} step" if stage else "step"
    if steps is None:
        return []
    if not isinstance(steps, (list, tuple)):
        raise ValueError(f"{stage or 'the'} pipeline must be a list of steps, not {type(steps).__name__}")
    out = []
    for i, raw in enumerate(steps, 1):
        if isinstance(raw, str):
            name, params = raw, {}
        elif isinstance(raw, dict) and len(raw) == 1:
            name, params = next(iter(raw.items()))
            params = {} if params is None else params
        else:
            raise ValueError(f"{where} {i} must be a step name or a one-key mapping {{name: {{params}}}}, got {raw!r}")
        cls = STEPS.get(name) if isinstance(name, str) else None
        if cls is None:
            allowed = PRE_STEPS if stage == PRE else POST_STEPS if stage == POST else tuple(STEPS)
            raise ValueError(f"{where} {i} '{name}' is unknown; known steps: {', '.join(allowed)}")
        if stage and stage not in cls.stages:
            raise ValueError(f"{where} {i} '{name}' is a {cls.stages[0]}-processing step, not a {stage}-processing one")
        if not isinstance(params, dict):
            raise ValueError(f"{where} {i} '{name}': parameters must be a mapping, not {params!r}")
        unknown = sorted(set(params) - set(cls.params))
        if unknown:
            known = ", ".join(cls.params) or "none"
            raise ValueError(f"{where} {i} '{name}': unknown parameter '{unknown[0]}' (known: {known})")
        values = {}
        for key, spec in cls.params.items():
            if key not in params or params[key] is None:
                if spec.required:
                    raise ValueError(f"{where} {i} '{name}': parameter '{key}' is required")
                values[key] = spec.default
                continue
            try:
                values[key] = spec.check(params[key])
            except ValueError as e:
                raise ValueError(f"{where} {i} '{name}': parameter '{key}' must be {e}, not {params[key]!r}") from None
        out.append((name, values, cls))
    return out


def validate_steps(steps: Any, stage: Optional[str] = None) -> None:
    """Raise ValueError naming the step and parameter when `steps` is not a valid pipeline.

    `stage` is "pre", "post" or None (any known step). Files (custom steps, labels) are
    checked when the pipeline is built, since they are relative to the function folder."""
    parse_steps(steps, stage)


# --------------------------------------------------------------------------- pipeline

class Pipeline:
    """Steps applied in order to one input (pre) or one prediction (post).

    `base_dir` is the folder custom step files and labels are relative to; `labels` is the
    default labels file for top_k/argmax/threshold."""

    def __init__(self, steps: Any = (), base_dir: str = ".", stage: Optional[str] = None, labels: Optional[str] = None):
        self.base_dir = str(base_dir)
        self.stage = stage
        self.default_labels = labels
        self._labels_cache: dict = {}
        self.spec = list(steps or [])
        self.steps: list = []
        layout = "nhwc"
        resize = None
        for name, params, cls in parse_steps(self.spec, stage):
            step = cls(params, self)
            if isinstance(step, (Normalize, ChannelOrder)):
                step.channel_axis = 0 if layout == "nchw" else -1
            if isinstance(step, Layout):
                step.source, layout = layout, step.to
            if isinstance(step, Resize) and resize is None:
                resize = step
            self.steps.append(step)
        self.takes_images = bool(self.steps) and isinstance(self.steps[0], DecodeImage)
        self.has_image_steps = any(s.image for s in self.steps)
        self.layout = layout
        if self.takes_images and resize is not None:
            # JPEG DCT scaling: decode at the smallest 1/2^n scale still >= the target (both
            # orientations, since exif_transpose may swap width and height).
            side = max(resize.width, resize.height)
            self.steps[0].draft_size = (side, side)

    def __len__(self):
        return len(self.steps)

    def __call__(self, x: Any, skip_image_steps: bool = False) -> Any:
        """Run every step on one item; at the end of a pre-processing pipeline an image
        becomes a float32 array (implied to_array)."""
        for step in self.steps:
            if step.image:
                if skip_image_steps:
                    continue
            elif _is_pil(x) and not isinstance(step, Custom):
                x = to_array(x)
            x = step(x)
        if self.stage == PRE and _is_pil(x):
            x = to_array(x)
        return x

    # labels ------------------------------------------------------------------
    def load_labels(self, path: Optional[str]) -> Optional[list]:
        path = path or self.default_labels
        if not path:
            return None
        if path not in self._labels_cache:
            full = path if os.path.isabs(path) else os.path.join(self.base_dir, path)
            try:
                with open(full, encoding="utf-8") as f:
                    lines = [line.rstrip("\r\n") for line in f]
            except OSError as e:
                raise ValueError(f"labels file '{path}' cannot be read from {self.base_dir}: {e.strerror}") from None
            while lines and not lines[-1].strip():
                lines.pop()
            self._labels_cache[path] = [line.strip() for line in lines]
        return self._labels_cache[path]

    @staticmethod
    def label(names: Optional[list], i: int) -> str:
        return names[i] if names is not None and 0 <= i < len(names) else str(i)


# --------------------------------------------------------------------------- helpers

def _is_pil(x) -> bool:
    return "PIL.Image" in sys.modules and isinstance(x, sys.modules["PIL.Image"].Image)


def to_array(x: Any) -> np.ndarray:
    """Pillow image or array-like -> float32 ndarray (HWC for images)."""
    if isinstance(x, np.ndarray):
        return x if x.dtype == np.float32 else x.astype(np.float32)
    if _is_pil(x):
        a = np.asarray(x, dtype=np.float32)
        return a[..., None] if a.ndim == 2 else a
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput(f"expected numbers, got {_kind(x)}") from None


def _scores(x: Any) -> np.ndarray:
    if isinstance(x, dict):  # multi-output model: built-in steps act on the first output
        x = next(iter(x.values()))
    return np.asarray(x, dtype=np.float32)


def b64decode(s: str) -> bytes:
    """Standard or URL-safe base64, with or without padding or a `data:...;base64,` prefix."""
    if s.startswith("data:") and "," in s[:200]:
        s = s.split(",", 1)[1]
    s = s.strip()
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("is not valid base64") from None


def _kind(x) -> str:
    if isinstance(x, (list, tuple)):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    return type(x).__name__


def load_custom(base_dir: str, file: str, function: str):
    """Import `function` from `file` (relative to base_dir) without touching sys.path order."""
    import importlib.util  # lazy: only functions with custom steps pay for it

    path = file if os.path.isabs(file) else os.path.normpath(os.path.join(base_dir, file))
    if not os.path.isfile(path):
        raise ValueError(f"custom step file '{file}' does not exist in {base_dir}")
    modname = "mlfn_custom_" + "".join(c if c.isalnum() else "_" for c in os.path.relpath(path, base_dir))
    mod = sys.modules.get(modname)
    if mod is None or getattr(mod, "__file__", None) != path:
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        if base_dir not in sys.path:
            sys.path.append(base_dir)  # so the user's file can import its siblings
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            raise ValueError(
                f"custom step file '{file}'{_user_line(e, path)} failed to import: {e.__class__.__name__}: {e}"
            ) from None
        sys.modules[modname] = mod
    fn = getattr(mod, function, None)
    if not callable(fn):
        raise ValueError(f"custom step file '{file}' has no function '{function}'")
    return fn, path


def _user_line(exc: BaseException, path: str) -> str:
    """', line N' of the deepest traceback frame inside the user's file."""
    import traceback

    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    if line is None and isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    return f", line {line}" if line else ""
