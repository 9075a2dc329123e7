"""Function staging: mlfn.yaml -> the function folder the runtime loads (actions/README.md).

    <out_dir>/function.json
    <out_dir>/models/<model>/model.tflite
    <out_dir>/<labels and custom step files, at their project-relative paths>

Files referenced by pipeline steps (`labels` of top_k/argmax/threshold, `custom.file`) and
`build.custom_files` are copied next to function.json; a path outside the project goes
under `files/`. The paths written into function.json are the copied ones (relative to
function.json). `pipeline.labels` (or a model's `labels`) is the default of every step
that takes labels.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from mlfn.config import CONFIG_FILE, Config, to_dict
from mlfn.errors import ConfigError

FUNCTION_JSON = "function.json"


@functools.lru_cache(maxsize=None)
def file_params() -> dict:
    """Step name -> the params that name a file (relative to the project folder): every
    runtime step that takes `labels` (top_k, argmax, threshold), and custom's `file`."""
    from mlfn_runtime.pipeline import STEPS  # installed with mlfn, always; lazy: numpy

    out = {name: ("labels",) for name, cls in STEPS.items() if "labels" in cls.params}
    out["custom"] = ("file",)
    return out


def _step_items(steps: list, where: str, src: str) -> list:
    """Normalize `[name | {name: params}]` to `[(name, params)]` (validation is the runtime's)."""
    out = []
    for i, step in enumerate(steps or []):
        if isinstance(step, str):
            out.append((step, {}))
        elif isinstance(step, dict) and len(step) == 1:
            name, params = next(iter(step.items()))
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ConfigError(f"{where}[{i}] ({name}) in {src} must map to a mapping of parameters.")
            out.append((str(name), dict(params)))
        else:
            raise ConfigError(f"{where}[{i}] in {src} must be a step name or a one-key mapping {{step: {{params}}}}.")
    return out


def validate_pipeline(steps: list, stage: str, where: str, src: str) -> None:
    """Reject a bad pipeline before building, naming mlfn.yaml and the step; a
    post-processing step under `pre` (or the reverse) is caught here too."""
    from mlfn_runtime.pipeline import validate_steps  # installed with mlfn, always

    try:
        validate_steps(steps or [], stage)
    except ValueError as e:
        raise ConfigError(f"{where} in {src}: {e}") from None


class _Files:
    """Copies referenced files into the function folder once, remembering their new names."""

    def __init__(self, cfg: Config, out_dir: Path):
        self.cfg = cfg
        self.out_dir = out_dir
        self.copied: dict = {}

    def add(self, path: str, where: str) -> str:
        src = Path(self.cfg.resolve(path))
        if not src.is_file():
            raise ConfigError(f"{where} in {self.cfg.source or CONFIG_FILE} names {path}, which does not exist.")
        key = str(src.resolve())
        if key in self.copied:
            return self.copied[key]
        try:
            rel = src.resolve().relative_to(self.cfg.project_dir.resolve()).as_posix()
        except ValueError:
            rel = f"files/{src.name}"
        if rel == FUNCTION_JSON or rel.startswith("models/"):
            rel = f"files/{rel}"
        if rel in self.copied.values():  # two outside files with one name: keep both
            import hashlib

            rel = f"files/{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}/{src.name}"
        dest = self.out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        self.copied[key] = rel
        return rel


def _rewrite_steps(steps: list, files: _Files, labels: Optional[str], where: str, src: str) -> list:
    out = []
    for i, (name, params) in enumerate(_step_items(steps, where, src)):
        params = copy.deepcopy(params)
        if "labels" in file_params().get(name, ()) and not params.get("labels") and labels:
            params["labels"] = labels
        for key in file_params().get(name, ()):
            if params.get(key):
                params[key] = files.add(str(params[key]), f"{where}[{i}].{name}.{key}")
        out.append({name: params})
    return out


def function_document(cfg: Config, models: list) -> dict:
    """The function.json mapping (models: list of per-model dicts already staged)."""
    doc = {
        "name": cfg.name,
        "runtime": cfg.build.runtime,
        "models": models,
        "serving": to_dict(cfg.serving),
    }
    if cfg.auth.enabled:  # settings only: the keys live on the platform (mlfn_runtime.auth)
        doc["auth"] = {k: v for k, v in to_dict(cfg.auth).items() if k != "secret" and v is not None}
    return doc


def stage_function(cfg: Config, out_dir, progress: Optional[Callable[[str], None]] = None,
                   quantize: Optional[Callable] = None) -> Path:
    """Write the function folder for `cfg` into `out_dir` (replaced) and return its path.

    Quantizes each model with `mlfn.model.quantize_model` (cached by the model side),
    copies the .tflite files, labels and custom step files, and writes function.json.
    `quantize` replaces quantize_model (used by tests and by callers that already hold
    converted models)."""
    say = progress or (lambda m: None)
    src = str(cfg.source or CONFIG_FILE)
    out_dir = Path(out_dir)
    # Validate everything before the (slow) conversions.
    entries = [(cfg.model_name, None, cfg.pipeline.pre, cfg.pipeline.post, cfg.pipeline.labels, "pipeline")]
    for i, m in enumerate(cfg.models):
        entries.append((
            m.name, m,
            cfg.pipeline.pre if m.pre is None else m.pre,
            cfg.pipeline.post if m.post is None else m.post,
            m.labels or cfg.pipeline.labels,
            f"models[{i}]",
        ))
    for name, _, pre, post, _, where in entries:
        validate_pipeline(pre, "pre", f"{where}.pre" if where == "pipeline" else f"{where}.pre (model {name})", src)
        validate_pipeline(post, "post", f"{where}.post" if where == "pipeline" else f"{where}.post (model {name})", src)

    if quantize is None:
        from mlfn.model import quantize_model as quantize

    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = _Files(cfg, tmp)
    models = []
    for name, extra, pre, post, labels, where in entries:
        if labels:
            files.add(labels, f"{where}.labels")  # bundled even when no top_k step uses it
        say(f"Quantizing model {name}")
        result = quantize(cfg, model=extra, progress=progress) if extra is not None else quantize(cfg, progress=progress)
        rel = f"models/{name}/model.tflite"
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.tflite_path, dest)
        models.append({
            "name": name,
            "path": rel,
            "sha256": result.sha256,
            "quantization": result.mode,
            "size_bytes": int(result.size_bytes),
            "pre": _rewrite_steps(pre, files, None, f"{where}.pre", src),
            "post": _rewrite_steps(post, files, labels, f"{where}.post", src),
        })
    for i, path in enumerate(cfg.build.custom_files):
        files.add(str(path), f"build.custom_files[{i}]")
    doc = function_document(cfg, models)
    (tmp / FUNCTION_JSON).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def pipeline_hash(doc: dict) -> str:
    """sha256 of everything in function.json except the model files' identity."""
    import hashlib

    view = copy.deepcopy(doc)
    for m in view.get("models", []):
        m.pop("sha256", None)
        m.pop("size_bytes", None)
    return "sha256:" + hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()
