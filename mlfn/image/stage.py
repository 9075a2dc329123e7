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
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from mlfn.config import CONFIG_FILE, Config, ServingConfig, to_dict
from mlfn.errors import ConfigError
from mlfn.pipelines import file_params, load_pipelines, pipeline_entries, step_items, validate_pipelines

FUNCTION_JSON = "function.json"
LATER_SERVING_KEYS = ("events", "batching", "grpc", "header_timeout_seconds", "body_timeout_seconds", "idle_timeout_seconds",
                      "max_connections", "drain_seconds", "openwhisk", "code_actions", "init_token_sha256")


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
    for i, (name, params) in enumerate(step_items(steps, where, src)):
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
    # settings newer than the first five only when set: an unchanged function keeps its content hash
    defaults = to_dict(ServingConfig())
    for key in LATER_SERVING_KEYS:
        if doc["serving"][key] == defaults[key]:
            del doc["serving"][key]
    if cfg.logging.sink:
        doc["logging"] = to_dict(cfg.logging)
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
    entries = pipeline_entries(cfg)
    validate_pipelines(cfg)
    for name, _, pre, post, labels, where in entries:
        if labels and not Path(cfg.resolve(labels)).is_file():
            raise ConfigError(f"{where}.labels in {src} names {labels}, which does not exist.")
        load_pipelines(cfg, pre, post, labels, f"{where} (model {name})", src)

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
    from mlfn.image.check import check_function

    say("Loading the staged function and running it once on a synthetic input")
    for warning in check_function(tmp, src):
        say(f"Warning: {warning}")
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
