"""The base of every pipeline step and the helpers steps share (no Pillow import here).

A step is built once per pipeline from its checked parameters (`step_params`) and then
called on one input (pre-processing) or one prediction (post-processing). The steps
themselves are grouped by kind: `image_steps` (Pillow images), `array_steps` (numpy
arrays), `output_steps` (model outputs -> answers), `custom_step` (user code)."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from mlfn_runtime.errors import InvalidInput

PRE = "pre"
POST = "post"


class Step:
    """A pipeline step. Subclasses set `name`, `stages`, `params`, and implement `__call__`."""

    name = ""
    stages: tuple = (PRE, POST)
    image = False  # works on Pillow images (pre-processing before to_array)
    answers_json = False  # returns only JSON values (dict, list, str, int, float, bool, None): no jsonable pass
    params: dict = {}

    def __init__(self, params: dict, pipeline):
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


def is_pil(x) -> bool:
    """A Pillow image (without importing Pillow when no pipeline did)."""
    return "PIL.Image" in sys.modules and isinstance(x, sys.modules["PIL.Image"].Image)


def to_array(x: Any) -> np.ndarray:
    """Pillow image or array-like -> float32 ndarray (HWC for images)."""
    if isinstance(x, np.ndarray):
        return x if x.dtype == np.float32 else x.astype(np.float32)
    if is_pil(x):
        a = np.asarray(x, dtype=np.float32)
        return a[..., None] if a.ndim == 2 else a
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput(f"expected numbers, got {kind(x)}") from None


def kind(x) -> str:
    """What `x` is, for messages: "a list", "an object", "an array of shape (2, 3)", ..."""
    if isinstance(x, (list, tuple)):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    return type(x).__name__
