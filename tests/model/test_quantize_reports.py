"""Quantize reports on models the sample does not cover: MSE/MAE and an MSE gate for a
regression model (7 features -> 1 value), batch-norm notes, modes that do not pay off."""
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


def test_report_says_a_batchnorm_after_relu_stays_mul_add_and_plain_numbers_on_the_chart(small_models, tmp_path):
    """cnn_softmax has Conv2D(relu) -> BatchNormalization: no folding is possible."""
    from mlfn.model.report import batchnorm_notes, render_result

    (tmp_path / "mlfn.yaml").write_text(yaml.safe_dump({
        "name": "cnn", "model": {"path": str(small_models / "cnn_softmax.keras")},
        "quantize": {"cache_dir": str(small_models / "cache")}}))
    result = quantize_model(load_config(str(tmp_path)), mode="none")
    assert result.ops_after.get("MUL") and result.ops_before.get("BatchNormalization") == 1
    assert batchnorm_notes(result.ops_before, result.ops_after) == [
        "1 BatchNormalization kept as MUL + ADD (it follows an activation, so it cannot be folded; "
        "put it before the activation to fold it)"]
    text = render_result(result)
    assert "folded into" not in text
    assert "quality not measured: set quantize.validation_data" in text  # not a bare '-'
    # folded when the converter leaves no MUL
    assert batchnorm_notes({"BatchNormalization": 2, "Conv2D": 2}, {"CONV_2D": 2}) == [
        "2 BatchNormalization folded into the preceding layer's weights"]


def test_compare_explains_modes_that_do_not_pay_off_and_labels_sizes_plainly(reg_project, tmp_path):
    from mlfn.model.compare import _bar_text, mode_notes

    report = compare_modes(reg_project(), modes=["none", "dynamic"], out_dir=str(tmp_path / "r"), chart=True)
    # a 7 -> 16 -> 1 dense model: dynamic quantization saves nothing worth having
    assert any(n.startswith("dynamic does not shrink this model") for n in report.notes), report.notes
    rows = [{"mode": "none", "size_bytes": 9000, "latency_ms_p50": 0.010},
            {"mode": "int8", "size_bytes": 4000, "latency_ms_p50": 0.020}]
    assert mode_notes(rows) == [
        "int8 is slower than float32 here (0.020 ms against 0.010 ms p50): on this CPU LiteRT's float kernels "
        "(XNNPACK) beat its quantized ones for this model; choose it for size, or measure on the CPU that will "
        "serve it."]
    assert [_bar_text(v) for v in (8620.0, 8.62, 0.0123)] == ["8,620", "8.6", "0.0123"]
