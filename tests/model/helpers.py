"""Small helpers shared by the model tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from mlfn.config import from_dict


def project(dirpath: Path, base: Path, **quantize) -> "object":
    """A Config for a project in `dirpath` whose model, data and conversion cache default to
    the trained digits sample in `base` (absolute paths), with `quantize` keys overridden;
    writes mlfn.yaml."""
    data = yaml.safe_load((base / "mlfn.yaml").read_text())
    model = quantize.pop("model", None)
    signature = quantize.pop("signature", None)
    data["model"] = {"path": str(model or base / "model.keras")}
    if signature:
        data["model"]["signature"] = signature
    q = data["quantize"]
    q["representative_data"] = str(base / "calibration.npy")
    q["validation_data"] = str(base / "validation.npz")
    q["cache_dir"] = str(base / ".mlfn" / "cache")  # conversions are shared between tests
    q.update(quantize)
    data["pipeline"]["labels"] = str(base / "labels.txt")
    dirpath.mkdir(parents=True, exist_ok=True)
    path = dirpath / "mlfn.yaml"
    path.write_text(yaml.safe_dump(data))
    return from_dict(data, source=path)


def write_pngs(folder: Path, x: np.ndarray, names) -> list:
    """Save (N, 8, 8, 1) arrays in 0..1 as grayscale PNGs (pixel = round(x * 255))."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(x[i, :, :, 0] * 255).astype("uint8"), mode="L").save(p)
        out.append(p)
    return out


def leftovers(folder: Path) -> list:
    """Temporary files an interrupted or failed write would leave behind."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".dl-")]
