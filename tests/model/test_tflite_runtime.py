"""quantize.target: tflite-runtime — verified by loading the model in tflite-runtime 2.14.

Installs tflite-runtime 2.14 + numpy<2 once (pip, from PyPI) into the mlfn cache."""
from __future__ import annotations

from pathlib import Path

import pytest

from mlfn.errors import ModelError
from mlfn.model import quantize_model
from mlfn.model.tflite_runtime import verify_tflite_runtime
from tests.model.helpers import project

pytestmark = pytest.mark.slow


def test_target_tflite_runtime_loads_in_2_14(digits_project, tmp_path):
    litert_cfg = project(tmp_path / "a", digits_project, mode="dynamic")
    plain = quantize_model(litert_cfg)
    # The default converter output uses op versions tflite-runtime 2.14 lacks ...
    with pytest.raises(ModelError, match="tflite-runtime 2.14 cannot load.*FULLY_CONNECTED version"):
        verify_tflite_runtime(Path(plain.tflite_path).read_bytes(), plain.source)
    # ... and target tflite-runtime avoids them, checked in a real 2.14 interpreter.
    for mode in ("dynamic", "int8"):
        cfg = project(tmp_path / mode, digits_project, mode=mode, target="tflite-runtime")
        r = quantize_model(cfg)
        assert r.verified == ["litert", "tflite-runtime"] and r.target == "tflite-runtime"
        info = verify_tflite_runtime(Path(r.tflite_path).read_bytes(), r.source)
        assert info["numpy"].startswith("1.") and info["output_shape"] == [1, 10]
        assert r.evaluation["accuracy_drop"] <= 2.0


def test_build_runtime_implies_target(digits_project, tmp_path):
    cfg = project(tmp_path, digits_project, mode="dynamic")
    cfg.build.runtime = "tflite-runtime"
    r = quantize_model(cfg)
    assert r.target == "tflite-runtime" and "tflite-runtime" in r.verified
