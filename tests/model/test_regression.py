"""A regression model (7 features -> 1 value): MSE/MAE in the report and the table, an MSE
gate, and a sentence when an accuracy gate cannot apply."""
from __future__ import annotations

import pytest
import yaml

from mlfn.config import load_config
from mlfn.errors import AccuracyGateError
from mlfn.model import compare_modes, quantize_model
from tests.model.small_models import small_models  # noqa: F401  (fixture)


@pytest.fixture
def reg_project(small_models, tmp_path):
    def write(**quantize):
        (tmp_path / "mlfn.yaml").write_text(yaml.safe_dump({
            "name": "reg", "model": {"path": str(small_models / "reg.keras")},
            "quantize": {"validation_data": str(small_models / "reg_val.npz"),
                         "representative_data": str(small_models / "reg_cal.npy"),
                         "cache_dir": str(small_models / "cache"), **quantize}}))
        return load_config(str(tmp_path))
    return write


def test_compare_shows_mse_and_says_the_accuracy_gate_does_not_apply(reg_project, tmp_path):
    report = compare_modes(reg_project(max_accuracy_drop=1.0), modes=["none", "dynamic", "int8"],
                           out_dir=str(tmp_path / "report"), chart=False)
    assert all(m["mse"] is not None and m["mae"] is not None for m in report.modes)
    text = report.render()
    header = next(line for line in text.splitlines() if line.startswith("mode"))
    assert "MSE" in header and "accuracy" not in header
    int8 = next(line for line in text.splitlines() if line.startswith("int8"))
    assert f"{report.modes[2]['mse']:.4g}" in int8
    assert any("max_accuracy_drop does not apply" in n and "max_mse_increase_pct" in n for n in report.notes)


def test_the_mse_gate_fails_a_mode_that_loses_too_much(reg_project):
    measured = quantize_model(reg_project(), mode="int8").evaluation
    pct = measured["mse_increase_pct"]
    assert quantize_model(reg_project(max_mse_increase_pct=pct + 1.0), mode="int8").warnings == []
    with pytest.raises(AccuracyGateError, match=r"quantize.max_mse_increase_pct"):
        quantize_model(reg_project(max_mse_increase_pct=pct - 0.01), mode="int8")
    ignored = quantize_model(reg_project(max_accuracy_drop=0.5), mode="int8")
    assert any("max_accuracy_drop does not apply" in w for w in ignored.warnings)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    import os

    from mlfn.model.quantize import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "model.tflite", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "model.tflite").stat().st_mode & 0o777 == mode
