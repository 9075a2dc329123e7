"""Where the local controller keeps its state, and the id its containers are labelled with."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional


def state_dir() -> Path:
    """~/.mlfn/local, or $MLFN_LOCAL_HOME."""
    return Path(os.environ.get("MLFN_LOCAL_HOME") or Path.home() / ".mlfn" / "local")


def owner_id(home: Optional[Path]) -> str:
    """The label value of the containers of the controller whose state is in home."""
    return hashlib.sha256(str(Path(home).resolve() if home else "memory").encode()).hexdigest()[:12]
