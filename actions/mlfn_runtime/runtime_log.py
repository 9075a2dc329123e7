"""The runtime's log line on stderr (the activation log on OpenWhisk, the pod log on
Knative): `mlfn_runtime [service/revision]: message`."""
from __future__ import annotations

import os
import sys


def log(message: str) -> None:
    prefix = "mlfn_runtime"
    svc, rev = os.environ.get("K_SERVICE"), os.environ.get("K_REVISION")
    if svc or rev:
        prefix += f" [{svc or '-'}/{rev or '-'}]"
    try:
        sys.stderr.write(f"{prefix}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
