"""The custom step: a plain function from a Python file in the function folder,
`custom {file, function}`, called once per input (pre) or per prediction (post)."""
from __future__ import annotations

import os
import sys

from mlfn_runtime.errors import CustomStepError, InvalidInput
from mlfn_runtime.step import Step
from mlfn_runtime.step_params import Param, py_file, string


class Custom(Step):
    """A plain function from a Python file in the function folder: `custom {file, function}`."""

    name = "custom"
    params = {"file": Param(py_file, required=True), "function": Param(string, required=True)}

    def setup(self):
        self.fn, self.path = load_custom(self.pipeline.base_dir, self.file, self.function)

    def __call__(self, x):
        try:
            return self.fn(x)
        except InvalidInput:
            raise
        except Exception as e:
            raise CustomStepError(
                f"custom step '{self.function}' ({self.file}{_user_line(e, self.path)}) raised "
                f"{e.__class__.__name__}: {e}",
                status=400 if isinstance(e, ValueError) else 500,
            ) from e


def load_custom(base_dir: str, file: str, function: str):
    """Import `function` from `file` (relative to base_dir) without touching sys.path order."""
    import importlib.util  # lazy: only functions with custom steps pay for it

    path = file if os.path.isabs(file) else os.path.normpath(os.path.join(base_dir, file))
    if not os.path.isfile(path):
        raise ValueError(f"custom step file '{file}' does not exist in {base_dir}")
    modname = "mlfn_custom_" + "".join(c if c.isalnum() else "_" for c in os.path.relpath(path, base_dir))
    mod = sys.modules.get(modname)
    if mod is None or getattr(mod, "__file__", None) != path:
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        if base_dir not in sys.path:
            sys.path.append(base_dir)  # so the user's file can import its siblings
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            raise ValueError(
                f"custom step file '{file}'{_user_line(e, path)} failed to import: {e.__class__.__name__}: {e}"
            ) from None
        sys.modules[modname] = mod
    fn = getattr(mod, function, None)
    if not callable(fn):
        raise ValueError(f"custom step file '{file}' has no function '{function}'")
    return fn, path


def _user_line(exc: BaseException, path: str) -> str:
    """', line N' of the deepest traceback frame inside the user's file."""
    import traceback

    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    if line is None and isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    return f", line {line}" if line else ""
