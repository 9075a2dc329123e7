"""Array steps (pre-processing on numpy arrays): to_array, scale, normalize,
channel_order, layout, cast. After image steps the image becomes an array first."""
from __future__ import annotations

import numpy as np

from mlfn_runtime.errors import InvalidInput
from mlfn_runtime.step import PRE, Step, to_array
from mlfn_runtime.step_params import Param, choice, nonzero_numbers, number, numbers

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


class ToArray(Step):
    """Pillow image -> float32 numpy array HWC (grayscale gets a channel axis of 1)."""

    name, stages = "to_array", (PRE,)

    def __call__(self, x):
        return to_array(x)


class Scale(Step):
    """x * factor + offset, e.g. `scale {factor: 0.00392156862745098}` maps 0..255 to 0..1."""

    name, stages = "scale", (PRE,)
    params = {"factor": Param(number, default=1.0), "offset": Param(number, default=0.0)}

    def __call__(self, x):
        x = to_array(x)
        if not self.offset:  # the usual 1/255: one array operation, not two
            return (x * np.float32(self.factor)).astype(np.float32, copy=False)
        return (x * np.float32(self.factor) + np.float32(self.offset)).astype(np.float32, copy=False)


class Normalize(Step):
    """(x - mean) / std per channel (one value, or one per channel)."""

    name, stages = "normalize", (PRE,)
    params = {"mean": Param(numbers, required=True), "std": Param(nonzero_numbers, required=True)}

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
    params = {"order": Param(choice(("rgb", "bgr")), required=True)}

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
    params = {"to": Param(choice(("nhwc", "nchw")), required=True)}

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
    params = {"dtype": Param(choice(DTYPES), required=True)}

    def __call__(self, x):
        x = to_array(x)
        dt = np.dtype(self.dtype)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            x = np.clip(np.rint(x), info.min, info.max)
        return x.astype(dt)
