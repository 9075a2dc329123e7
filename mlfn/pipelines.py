"""The pipelines an mlfn.yaml declares, checked against the runtime's own step table before
anything slow runs: `mlfn quantize` and `mlfn build` reject the same steps, and custom step
files and labels are loaded here so their mistakes cost no conversion."""
from __future__ import annotations

import functools
from typing import Optional

from mlfn.config import CONFIG_FILE, Config
from mlfn.errors import ConfigError


@functools.lru_cache(maxsize=None)
def file_params() -> dict:
    """Step name -> the params that name a file (relative to the project folder): every
    runtime step that takes `labels` (top_k, argmax, threshold), and custom's `file`."""
    from mlfn_runtime.pipeline import STEPS  # installed with mlfn, always; lazy: numpy

    out = {name: ("labels",) for name, cls in STEPS.items() if "labels" in cls.params}
    out["custom"] = ("file",)
    return out


def step_items(steps: list, where: str, src: str) -> list:
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


def pipeline_entries(cfg: Config) -> list:
    """[(model name, ExtraModel or None, pre, post, labels, where in mlfn.yaml)] of every model."""
    entries = [(cfg.model_name, None, cfg.pipeline.pre, cfg.pipeline.post, cfg.pipeline.labels, "pipeline")]
    for i, m in enumerate(cfg.models):
        entries.append((
            m.name, m,
            cfg.pipeline.pre if m.pre is None else m.pre,
            cfg.pipeline.post if m.post is None else m.post,
            m.labels or cfg.pipeline.labels,
            f"models[{i}]",
        ))
    return entries


def validate_pipelines(cfg: Config) -> None:
    """ConfigError naming mlfn.yaml and the step when any model's pipeline is invalid
    (`mlfn quantize` and `mlfn build` reject the same steps)."""
    src = str(cfg.source or CONFIG_FILE)
    for name, _, pre, post, _, where in pipeline_entries(cfg):
        validate_pipeline(pre, "pre", f"{where}.pre" if where == "pipeline" else f"{where}.pre (model {name})", src)
        validate_pipeline(post, "post", f"{where}.post" if where == "pipeline" else f"{where}.post (model {name})", src)


def load_pipelines(cfg: Config, pre: list, post: list, labels: Optional[str], where: str, src: str) -> None:
    """Build the runtime's pipelines from the project folder, before any conversion: custom
    step files are imported and labels read here, so their mistakes cost no quantization."""
    from mlfn_runtime.pipeline import POST, PRE, Pipeline

    try:
        Pipeline(pre, str(cfg.project_dir), stage=PRE, labels=cfg.resolve(labels))
        Pipeline(post, str(cfg.project_dir), stage=POST, labels=cfg.resolve(labels))
    except ValueError as e:
        raise ConfigError(f"The pipeline of {where} in {src} cannot load: {e}.") from None
