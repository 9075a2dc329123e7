"""`mlfn init`: write a commented mlfn.yaml for a model, every key at its default.

The file is generated from the schema in mlfn.config (field defaults, and the comment
beside each field there), so it can never drift from what the loader accepts.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

import yaml

from mlfn import config as C
from mlfn.errors import ConfigError, ModelError

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


def _keras_input_shape(path: Path) -> Optional[list]:
    """Read the input shape from a Keras v3 archive's config.json without TensorFlow."""
    try:
        with zipfile.ZipFile(path) as z:
            conf = json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError):
        return None
    found: list = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("batch_shape", "batch_input_shape"):
                if key in node and isinstance(node[key], list) and not found:
                    found.append(node[key])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(conf)
    return found[0] if found else None


def suggest_pipeline(shape: Optional[list]) -> tuple[list, list]:
    """An image pipeline for (N, H, W, C) inputs; a tensor pipeline otherwise."""
    if shape and len(shape) == 4 and shape[1] and shape[2] and shape[3] in (1, 3):
        h, w, c = shape[1], shape[2], shape[3]
        pre = [
            {"decode_image": {}},
            {"convert": {"mode": "L" if c == 1 else "RGB"}},
            {"resize": {"width": w, "height": h}},
            {"scale": {"factor": 1 / 255}},
        ]
        return pre, [{"softmax": {}}, {"top_k": {"k": 5}}]
    return [], [{"identity": {}}]


def init_project(model: str, out: str = "mlfn.yaml", name: Optional[str] = None, force: bool = False) -> dict:
    """Write a commented mlfn.yaml for `model`; returns what was written."""
    out_path = Path(out)
    if out_path.is_dir():
        out_path = out_path / C.CONFIG_FILE
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to overwrite it.")
    is_remote = "://" in model
    mp = Path(model)
    if not is_remote and not mp.exists():
        raise ModelError(f"Model {model} does not exist; pass a SavedModel folder, a .keras/.h5 or a .tflite file.")
    if not is_remote and mp.is_file() and mp.suffix not in (".keras", ".h5", ".tflite"):
        raise ModelError(f"Model {model} is not a SavedModel folder, .keras, .h5 or .tflite file.")
    if not is_remote and mp.is_dir() and not (mp / "saved_model.pb").exists():
        raise ModelError(f"{model} is a folder without saved_model.pb, so it is not a TensorFlow SavedModel.")
    func_name = name or re.sub(r"[^A-Za-z0-9_-]+", "-", mp.stem if mp.suffix else mp.name).strip("-") or "model"
    shape = _keras_input_shape(mp) if (not is_remote and mp.suffix == ".keras") else None
    pre, post = suggest_pipeline(shape)
    base = out_path.resolve().parent
    if is_remote:
        rel = model
    else:
        full = mp.resolve()
        rel = str(full.relative_to(base)) if full.is_relative_to(base) else str(full)
    cfg = C.Config(name=func_name, model=C.ModelConfig(path=rel), pipeline=C.PipelineConfig(pre=pre, post=post))
    text = render_config(cfg)
    C.from_dict(yaml.safe_load(text))  # what we write must load
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return {"config": str(out_path), "name": func_name, "model": rel, "input_shape": shape}
