"""Checking that the legacy `tflite-runtime` 2.14 interpreter loads a converted model.

tflite-runtime 2.14 needs numpy<2, which cannot share a process with TensorFlow 2.21's
numpy 2, so it is installed once (`pip install --target`) into its own folder and the
model is loaded and invoked in a subprocess with that folder first on sys.path.
The folder is `$MLFN_TFLITE_RUNTIME_DIR`, else `~/.cache/mlfn/tflite-runtime-2.14`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from mlfn.errors import ModelError

REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy<2")

_CHECK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from tflite_runtime.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[2])
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
it.invoke()
out = it.get_output_details()[0]
print(json.dumps({"numpy": np.__version__, "output_shape": [int(v) for v in it.get_tensor(out["index"]).shape]}))
"""


def runtime_dir() -> Path:
    env = os.environ.get("MLFN_TFLITE_RUNTIME_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlfn" / "tflite-runtime-2.14"


def ensure_runtime(progress: Optional[Callable[[str], None]] = None) -> Path:
    """Install tflite-runtime 2.14 + numpy<2 into runtime_dir() unless already there."""
    dest = runtime_dir()
    if (dest / "tflite_runtime" / "interpreter.py").is_file():
        return dest
    if sys.version_info[:2] > (3, 11):
        raise ModelError(
            f"quantize.target tflite-runtime is checked with tflite-runtime 2.14, which has no wheels for "
            f"Python {sys.version_info[0]}.{sys.version_info[1]}; run mlfn with Python 3.11 or use target litert."
        )
    if progress:
        progress(f"Installing {' '.join(REQUIREMENTS)} into {dest} (once)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tflite-runtime-", dir=dest.parent))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
             "--only-binary=:all:", "--target", str(tmp), *REQUIREMENTS],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"Cannot install {', '.join(REQUIREMENTS)} to check the model: {last}")
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: use theirs
            if not (dest / "tflite_runtime").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def verify_tflite_runtime(content: bytes, origin: str, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Load and invoke `content` with tflite-runtime 2.14; ModelError naming the cause if it cannot."""
    env_dir = ensure_runtime(progress)
    with tempfile.TemporaryDirectory(prefix="mlfn-tflrt-") as tmp:
        model = Path(tmp) / "model.tflite"
        model.write_bytes(content)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        proc = subprocess.run([sys.executable, "-s", "-c", _CHECK, str(env_dir), str(model)],
                              capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        m = re.search(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'", proc.stderr)
        if m:
            why = f"it has no kernel for op {m.group(1)} version {m.group(2)}"
        raise ModelError(
            f"tflite-runtime 2.14 cannot load the model converted from {origin}: {why} "
            "(convert with quantize.target: tflite-runtime, or build with build.runtime: litert)."
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])
