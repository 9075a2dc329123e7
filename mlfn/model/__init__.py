"""The model side of mlfn: load a trained model, convert and quantize it to TFLite,
measure it and gate it. TensorFlow is imported only inside the functions that need it.

Public API (used by `mlfn quantize` and `mlfn build`):
    quantize_model(cfg, *, model=None, mode=None, out_path=None, use_cache=True, progress=None)
        -> QuantizeResult
    compare_modes(cfg, *, modes=None, out_dir=None, use_cache=True, progress=None) -> CompareReport
"""
from __future__ import annotations

from mlfn.model.quantize import QuantizeResult, quantize_model

__all__ = ["QuantizeResult", "quantize_model", "compare_modes", "CompareReport"]


def __getattr__(name):  # compare pulls in more; keep `import mlfn.model` light
    if name in ("compare_modes", "CompareReport"):
        from mlfn.model import compare

        return getattr(compare, name)
    raise AttributeError(name)
