"""Code sent in OpenWhisk's /init: Python source defining `main`, or a base64 zip holding
`__main__.py` (when `binary` is true); `main` names the entry point."""
from __future__ import annotations

import base64
import binascii
import io
import os
import sys
import types
from typing import Callable


def load_action(code: str, binary: bool, main: str) -> Callable:
    """Python source, or a base64 zip holding `__main__.py` -> its `main` function."""
    if binary:
        try:
            data = base64.b64decode(code, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the code is marked binary but is not valid base64") from None
        import zipfile

        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise ValueError("the binary code is not a zip archive") from None
        import tempfile

        root = tempfile.mkdtemp(prefix="mlfn-action-")
        archive.extractall(root)
        entry = os.path.join(root, "__main__.py")
        if not os.path.isfile(entry):
            raise ValueError("the zip archive has no __main__.py at its top level")
        sys.path.insert(0, root)
        with open(entry, encoding="utf-8") as f:
            source, filename = f.read(), entry
    else:
        source, filename = code, "__main__.py"
    module = types.ModuleType("action")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    fn = module.__dict__.get(main)
    if not callable(fn):
        raise ValueError(f"the code has no function '{main}'")
    sys.modules["action"] = module
    return fn
