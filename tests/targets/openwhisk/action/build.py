"""Build the tiny stdlib test action image (action_server.py) the OpenWhisk tests and the
local-controller benchmarks run: like a function image, it holds mlfn_runtime.router, so a
weighted alias (a conductor initialized with MLFN_ALIAS_ROUTES) works on it."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def build_action_image(base: str, tag: str) -> str:
    import docker

    import mlfn_runtime.router

    with tempfile.TemporaryDirectory(prefix="mlfn-action-") as tmp:
        context = Path(tmp)
        shutil.copytree(HERE, context, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "build.py"))
        (context / "mlfn_runtime").mkdir()
        (context / "mlfn_runtime" / "__init__.py").write_text("")
        shutil.copy(mlfn_runtime.router.__file__, context / "mlfn_runtime" / "router.py")
        docker.from_env().images.build(path=str(context), tag=tag, rm=True, buildargs={"BASE": base})
    return tag
