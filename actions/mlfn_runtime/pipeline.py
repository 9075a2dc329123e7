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
`ValueError` naming the step and the parameter (`validate_steps`). The steps live in
modules by kind: `image_steps`, `array_steps`, `output_steps`, `custom_step`.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from mlfn_runtime.array_steps import Cast, ChannelOrder, Layout, Normalize, Scale, ToArray
from mlfn_runtime.custom_step import Custom
from mlfn_runtime.image_steps import Convert, DecodeImage, ExifTranspose, Resize, image_bytes, mode_bands
from mlfn_runtime.output_steps import Argmax, Identity, Sigmoid, Softmax, Threshold, TopK
from mlfn_runtime.step import POST, PRE, is_pil, to_array

__all__ = ["PRE", "POST", "STEPS", "PRE_STEPS", "POST_STEPS", "Pipeline", "parse_steps", "validate_steps"]

STEPS: dict = {cls.name: cls for cls in (
    DecodeImage, ExifTranspose, Convert, Resize, ToArray, Scale, Normalize, ChannelOrder, Layout, Cast,
    Softmax, Sigmoid, Argmax, TopK, Threshold, Identity, Custom,
)}
PRE_STEPS = tuple(n for n, c in STEPS.items() if PRE in c.stages)
POST_STEPS = tuple(n for n, c in STEPS.items() if POST in c.stages)
PEAKS_KEPT = 256  # image sizes whose peak_bytes a pipeline remembers


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
        self._peaks: dict = {}  # (size, mode) -> peak_bytes
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
        if self.takes_images and resize is not None:
            # JPEG DCT scaling: decode at the smallest 1/2^n scale still >= the target (both
            # orientations, since exif_transpose may swap width and height).
            side = max(resize.width, resize.height)
            self.steps[0].draft_size = (side, side)

    def open_image(self, raw: Any):
        """The encoded image `raw` read from its header only (400 when it is none): its
        size and mode tell `peak_bytes` what decoding will cost. Pass it to the pipeline."""
        return self.steps[0].open(raw)

    def peak_bytes(self, size: tuple, mode: str) -> int:
        """The most bytes this pipeline holds at once for an image of `size` and `mode`:
        the decoded pixels, what each image step holds while it runs, then the float32
        array (and an array step's input, output and temporary); 10% more for the
        allocator's rounding (measured within 10% for PNG and JPEG, RGB(A), LA and L)."""
        key = (size, mode)
        known = self._peaks.get(key)
        if known is not None:
            return known
        peak = self._peak_bytes(size, mode)
        if len(self._peaks) < PEAKS_KEPT:  # requests mostly send a few sizes: computed once each
            self._peaks[key] = peak
        return peak

    def _peak_bytes(self, size: tuple, mode: str) -> int:
        peak = image_bytes(size, mode)
        for step in self.steps[1:]:
            if not step.image:
                break
            size, mode, held = step.image_out(size, mode)
            peak = max(peak, held)
        values = size[0] * size[1] * mode_bands(mode)
        array = max(image_bytes(size, mode) + values * 5, values * 4 * (3 if self._array_steps else 1))
        return max(peak, array) * 11 // 10

    @property
    def _array_steps(self) -> bool:
        return any(not step.image for step in self.steps)

    def __len__(self):
        return len(self.steps)

    @property
    def answers_json(self) -> bool:
        """Whether what this pipeline returns is JSON as it is (its last step says so)."""
        return bool(self.steps) and self.steps[-1].answers_json

    def __call__(self, x: Any, skip_image_steps: bool = False) -> Any:
        """Run every step on one item; at the end of a pre-processing pipeline an image
        becomes a float32 array (implied to_array)."""
        for step in self.steps:
            if step.image:
                if skip_image_steps:
                    continue
            elif is_pil(x) and not isinstance(step, Custom):
                x = to_array(x)
            x = step(x)
        if self.stage == PRE and is_pil(x):
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
