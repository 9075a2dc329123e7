"""Before an image is built: load the staged function as the image will, and run it once.

`check_function(function_dir, src)` loads `function.json` with the runtime's own
`load_function` (custom step files imported, labels read, models loaded), sends every
model one synthetic input of the model's input shape through pre-processing, the model and
post-processing, and checks each labels file against the model's output size. A config
that builds but cannot serve is a ConfigError naming mlfn.yaml; what may be intended (a
softmax step after a softmax output) comes back as warnings.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from mlfn.errors import ConfigError

_LABEL_STEPS = ("top_k", "argmax", "threshold")


def check_function(function_dir: Path, src: str) -> list:
    """Raise ConfigError when the staged function cannot load or serve; return warnings."""
    from mlfn_runtime.errors import CustomStepError, RuntimeFunctionError
    from mlfn_runtime.function import load_function

    try:
        function = load_function(str(function_dir))
    except RuntimeFunctionError as e:
        raise ConfigError(f"The function of {src} would not start: {_plain(e)}") from None
    doc = json.loads((Path(function_dir) / "function.json").read_text())
    warnings = []
    for spec in doc["models"]:
        entry = function.model(spec["name"])
        where = f"model '{entry.name}' of {src}"
        classes = _classes(entry)
        warnings += _softmax_twice(function_dir, spec, where)
        _check_labels(function_dir, spec, classes, where)
        try:
            function.predict({"model": entry.name, **_synthetic_request(entry)})
        except CustomStepError as e:
            warnings.append(f"A custom step of {where} failed on a synthetic input ({_plain(e)}); "
                            "make sure it handles real requests.")
        except (RuntimeFunctionError, ValueError) as e:
            hint = " (resize to the model's input size)" if " takes [" in str(e) else ""
            raise ConfigError(f"The pipeline of {where} fails on an input of the model's shape: {_plain(e)}; "
                              f"fix pipeline.pre/post{hint}.") from None
    return warnings


def _plain(e: Exception) -> str:
    return str(e).rstrip(".")


def _classes(entry) -> int:
    shape = entry.runner.outputs[0].shape
    return int(shape[-1]) if len(shape) > 1 and shape[-1] > 0 else 0


def _softmax_twice(function_dir: Path, spec: dict, where: str) -> list:
    from mlfn.model.describe import describe_model

    post = [next(iter(s)) if isinstance(s, dict) else s for s in spec.get("post", [])]
    if not post or post[0] != "softmax":
        return []
    if describe_model(Path(function_dir) / spec["path"]).output_activation != "softmax":
        return []
    return [f"The output of {where} is already a softmax; the softmax step in its post-processing applies a "
            "second one and flattens the scores: remove it."]


def _check_labels(function_dir: Path, spec: dict, classes: int, where: str) -> None:
    for step in spec.get("post", []):
        if not isinstance(step, dict):
            continue
        name, params = next(iter(step.items()))
        if name not in _LABEL_STEPS or not (params or {}).get("labels") or classes < 2:
            continue  # one score (a sigmoid): threshold answers positive/negative, labels unused
        lines = (Path(function_dir) / params["labels"]).read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if len(lines) != classes:
            raise ConfigError(f"The labels file {params['labels']} of {where} has {len(lines)} labels, but the model "
                              f"has {classes} outputs; give one label per output, in output order.")


def _synthetic_request(entry) -> dict:
    """An input of the model's shape: an image for an image pipeline, else zeros."""
    import numpy as np

    inputs = entry.runner.inputs
    if entry.pre.takes_images:
        shape = [d if d > 0 else 32 for d in inputs[0].shape[1:]]
        if len(shape) == 3 and shape[0] in (1, 3) and shape[2] not in (1, 3, 4):  # channels first
            shape = [shape[1], shape[2], shape[0]]
        return {"image": _png(shape)}
    tensors = {t.name: np.zeros([1] + [d if d > 0 else 1 for d in t.shape[1:]]).tolist() for t in inputs}
    return {"inputs": tensors if len(inputs) > 1 else next(iter(tensors.values()))}


def _png(shape: list) -> bytes:
    """A mid-grey PNG sized like the model input (H, W[, C])."""
    from PIL import Image

    h, w = (shape + [32, 32])[:2]
    channels = shape[2] if len(shape) > 2 else 1
    image = Image.new("L" if channels == 1 else "RGB", (w, h), 128 if channels == 1 else (128, 128, 128))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
