"""The build side of images: `mlfn base build`, `mlfn build`, push, and the daemonless builder.

Public API (other parts of mlfn call these; names are stable):
- `stage_function(cfg, out_dir, progress=None) -> Path`: the function folder (function.json,
  models, labels, custom steps) as actions/README.md describes it.
- `build_image(cfg, *, tag=None, push=None, builder=None, progress=None) -> BuildResult`.
- `build_base_image(tag="mlfn-base:3.11", *, debug_shell=False, force=False, progress=None)`.

Heavy modules (docker SDK, jinja2) are imported inside the functions.
"""
from mlfn.image.stage import stage_function  # noqa: F401


def build_image(cfg, **kwargs):
    from mlfn.image.build import build_image as _build_image

    return _build_image(cfg, **kwargs)


def build_base_image(tag="mlfn-base:3.11", **kwargs):
    from mlfn.image.base_image import build_base_image as _build_base_image

    return _build_base_image(tag, **kwargs)


def __getattr__(name):
    if name == "BuildResult":
        from mlfn.image.result import BuildResult

        return BuildResult
    if name == "BaseResult":
        from mlfn.image.base_image import BaseResult

        return BaseResult
    raise AttributeError(name)
