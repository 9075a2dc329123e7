"""`mlfn init`: write a commented mlfn.yaml for a model, every key at its default.

The file is generated from the schema in mlfn.config (field defaults, and the comment
beside each field there), so it can never drift from what the loader accepts.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from mlfn import config as C
from mlfn.errors import ConfigError, ModelError
from mlfn.model.describe import ModelFacts, describe_model

_FIELD_COMMENT = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")


def _comments(cls) -> dict:
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = _FIELD_COMMENT.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _emit(obj, indent: int, lines: list) -> None:
    comments = _comments(type(obj))
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        if f.name == "source":
            continue
        value = getattr(obj, f.name)
        comment = comments.get(f.name)
        if dataclasses.is_dataclass(value):
            doc = (inspect.getdoc(type(value)) or "").splitlines()
            lines.append("")
            if doc and doc[0]:
                lines.append(f"{pad}# {doc[0]}")
            lines.append(f"{pad}{f.name}:")
            _emit(value, indent + 1, lines)
            continue
        if isinstance(value, list) and value and isinstance(value[0], (dict, str)) and f.name in ("pre", "post"):
            lines.append(f"{pad}{f.name}:" + (f"  # {comment}" if comment else ""))
            for step in value:
                lines.append(f"{pad}  - {_scalar(step)}")
            continue
        line = f"{pad}{f.name}: {_scalar(value)}"
        if comment:
            line += f"  # {comment}"
        lines.append(line)


def render_config(cfg: C.Config) -> str:
    lines = [
        "# mlfn.yaml: how mlfn turns this model into a serverless function.",
        "# Every key is shown at its default; delete what you do not change.",
        "# Flags override this file; MLFN_SECTION__KEY environment variables too (e.g. MLFN_QUANTIZE__MODE=int8).",
    ]
    _emit(cfg, 0, lines)
    return "\n".join(lines) + "\n"


LABEL_FILES = ("labels.txt", "labels")


def suggest_pipeline(facts: Optional[ModelFacts]) -> tuple[list, list]:
    """(pre, post) for a model: an image pipeline for one (N, H, W, 1|3) input, else none;
    post-processing that fits the output: top_k after a softmax (never a second one),
    threshold after a sigmoid, softmax + top_k for an image model's logits."""
    if facts is None:
        return [], [{"identity": {}}]
    shape = facts.inputs[0].shape if len(facts.inputs) == 1 else None
    image = bool(shape and len(shape) == 3 and shape[0] and shape[1] and shape[2] in (1, 3))
    pre = []
    if image:
        h, w, c = shape
        pre = [
            {"decode_image": {}},
            {"convert": {"mode": "L" if c == 1 else "RGB"}},
            {"resize": {"width": w, "height": h}},
        ]
        if facts.rescales_input:  # a model with its own Rescaling layer takes 0..255 pixels
            pass
        elif facts.input_range == (-1.0, 1.0):  # keras.applications' preprocess_input for this architecture
            pre.append({"normalize": {"mean": [127.5], "std": [127.5]}})
        else:
            pre.append({"scale": {"factor": 1 / 255}})
    classes = facts.classes
    k = min(5, classes) if classes else 5
    if facts.output_activation == "softmax":
        return pre, [{"top_k": {"k": k}}]
    if facts.output_activation == "sigmoid":
        return pre, [{"threshold": {"value": 0.5}}]
    if image and (classes is None or classes > 1):
        return pre, [{"softmax": {}}, {"top_k": {"k": k}}]
    return pre, [{"identity": {}}]


def default_function_name(model: str) -> str:
    """A valid function (and image repository) name from the model's file name."""
    mp = Path(model.rstrip("/"))
    stem = mp.stem if mp.suffix else mp.name
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "model"


def _find_labels(mp: Path) -> Optional[Path]:
    """A labels file beside the model (or inside a SavedModel folder)."""
    folders = ([mp] if mp.is_dir() else []) + [mp.parent]
    for folder in folders:
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _config_path(target: Path, base: Path, as_given: str) -> str:
    """How mlfn.yaml names a file: relative to its folder when inside it or when the user gave
    a relative path (`../saved_model`), else absolute."""
    full = target.resolve()
    if full.is_relative_to(base) or not Path(as_given).is_absolute():
        return os.path.relpath(full, base)
    return str(full)


def _check_model_arg(model: str, mp: Path) -> None:
    if not mp.exists():
        raise ModelError(f"Model {model} does not exist; pass a SavedModel folder, a .keras/.h5 or a .tflite file.")
    if mp.is_file() and mp.suffix not in (".keras", ".h5", ".tflite"):
        raise ModelError(f"Model {model} is not a SavedModel folder, .keras, .h5 or .tflite file.")
    if mp.is_dir() and not (mp / "saved_model.pb").exists():
        raise ModelError(f"{model} is a folder without saved_model.pb, so it is not a TensorFlow SavedModel.")


def init_project(model: str, out: str = "mlfn.yaml", name: Optional[str] = None, force: bool = False) -> dict:
    """Write a commented mlfn.yaml for `model`; returns what was written (and `warnings`)."""
    out_path = Path(out)
    if out_path.is_dir():
        out_path = out_path / C.CONFIG_FILE
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to overwrite it.")
    if name is not None:
        C.check_function_name(name, "--name")
    is_remote = "://" in model
    mp = Path(model)
    if not is_remote:
        _check_model_arg(model, mp)
    func_name = name or default_function_name(model)
    warnings = []
    facts = None
    if not is_remote:
        try:
            facts = describe_model(mp)
        except ModelError as e:  # still write the file; quantize refuses the model with the same sentence
            warnings.append(f"{e} The config has no pipeline suggestion.")
    pre, post = suggest_pipeline(facts)
    base = out_path.resolve().parent
    rel = model if is_remote else _config_path(mp, base, model)
    labels_file = None if is_remote else _find_labels(mp)
    labels = None
    if labels_file is not None:
        labels = _config_path(labels_file, base, model)
        count = len([ln for ln in labels_file.read_text(errors="replace").splitlines() if ln.strip()])
        if facts and facts.classes and count != facts.classes:
            warnings.append(f"{labels_file} has {count} labels but the model has {facts.classes} outputs; "
                            "fix the file before 'mlfn build'.")
    cfg = C.Config(name=func_name, model=C.ModelConfig(path=rel),
                   pipeline=C.PipelineConfig(pre=pre, post=post, labels=labels))
    text = render_config(cfg)
    C.from_dict(yaml.safe_load(text))  # what we write must load
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    inputs = [{"name": s.name, "shape": [None, *s.shape], "dtype": s.dtype} for s in (facts.inputs if facts else [])]
    return {"config": str(out_path), "name": func_name, "model": rel,
            "input_shape": inputs[0]["shape"] if inputs else None, "inputs": inputs,
            "output_activation": facts.output_activation if facts else None,
            "labels": labels, "pre": pre, "post": post, "warnings": warnings}
