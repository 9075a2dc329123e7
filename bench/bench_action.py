"""The action the local-controller benchmarks invoke: an image given with --image, or the
tiny test action (tests/targets/openwhisk/action) built on --base; and its payload."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def action_image_and_payload(image: Optional[str], payload_file: Optional[str], base: str) -> tuple:
    """(image, payload): `image`, or the tiny test action built on `base`; the JSON of
    `payload_file`, or a small object."""
    if not image:
        sys.path.insert(0, str(ROOT))
        from tests.targets.openwhisk.action.build import build_action_image

        image = build_action_image(base, "mlfnow-bench-action:1")
    payload = json.loads(Path(payload_file).read_text()) if payload_file else {"x": [1, 2, 3]}
    return image, payload
