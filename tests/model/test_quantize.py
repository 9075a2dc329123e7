"""quantize_model and `mlfn quantize` on the trained digits sample."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.config import load_config
from mlfn.model import QuantizeResult, quantize_model


def litert_accuracy(tflite_path: str, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (%) computed here, independently of mlfn.model.evaluate."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=tflite_path)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    hits = 0
    for i in range(len(x)):
        sample = x[i:i + 1]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            sample = np.round(sample / scale + zero).astype(inp["dtype"])
        it.set_tensor(inp["index"], sample)
        it.invoke()
        hits += int(np.argmax(it.get_tensor(out["index"])[0]) == y[i])
    return 100.0 * hits / len(x)


def keras_accuracy(project: Path, x, y) -> float:
    import keras

    model = keras.models.load_model(project / "model.keras", compile=False)
    return 100.0 * float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


@pytest.fixture(scope="module")
def validation(digits_project):
    with np.load(digits_project / "validation.npz") as z:
        return z["x"], z["y"]


def test_int8_result_shape(digits_tflite):
    r = digits_tflite
    assert isinstance(r, QuantizeResult)
    assert r.mode == "int8" and r.source_format == "keras"
    data = Path(r.tflite_path).read_bytes()
    assert data[4:8] == b"TFL3" and len(data) == r.size_bytes
    import hashlib

    assert hashlib.sha256(data).hexdigest() == r.sha256
    # Dropout and BatchNormalization exist before conversion and not after.
    assert r.ops_before.get("Dropout") == 1 and r.ops_before.get("BatchNormalization") == 1
    assert "CONV_2D" in r.ops_after and "FULLY_CONNECTED" in r.ops_after
    assert not any("DROPOUT" in k or "BATCH_NORM" in k for k in r.ops_after)
    assert r.verified == ["litert"]


def test_int8_accuracy_close_to_keras(digits_project, digits_tflite, validation):
    x, y = validation
    acc_tflite = litert_accuracy(digits_tflite.tflite_path, x, y)
    acc_keras = keras_accuracy(digits_project, x, y)
    assert acc_keras > 90.0
    assert abs(acc_keras - acc_tflite) <= 2.0, (acc_keras, acc_tflite)
    ev = digits_tflite.evaluation
    assert ev["samples"] == len(y) and ev["task"] == "classification"
    assert ev["converted"]["accuracy"] == pytest.approx(acc_tflite, abs=0.01)
    assert ev["original"]["accuracy"] == pytest.approx(acc_keras, abs=0.01)
    assert ev["converted"]["top_k"]["3"] >= ev["converted"]["accuracy"]
    assert ev["converted"]["latency_ms_p50"] <= ev["converted"]["latency_ms_p90"]


def test_every_mode_loads_with_expected_size(digits_project, tmp_path, validation):
    from ai_edge_litert.interpreter import Interpreter

    cfg = load_config(str(digits_project))
    sizes = {}
    x, y = validation
    for mode in ("none", "dynamic", "float16", "int8", "int16x8"):
        out = tmp_path / f"{mode}.tflite"
        r = quantize_model(cfg, mode=mode, out_path=str(out))
        assert r.mode == mode and Path(r.tflite_path) == out.resolve() and out.stat().st_size == r.size_bytes
        it = Interpreter(model_path=str(out))
        it.allocate_tensors()
        assert list(it.get_input_details()[0]["shape"]) == [1, 8, 8, 1]
        assert list(it.get_output_details()[0]["shape"]) == [1, 10]
        sizes[mode] = r.size_bytes
        assert litert_accuracy(str(out), x[:120], y[:120]) > 90.0, mode
    f32 = sizes["none"]
    assert 0.45 <= sizes["float16"] / f32 <= 0.55
    for mode in ("dynamic", "int8", "int16x8"):
        assert sizes[mode] / f32 <= 0.30, (mode, sizes)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_cache_hits_and_refreshes(digits_project, digits_tflite):
    cfg = load_config(str(digits_project))
    again = quantize_model(cfg, mode="int8")
    assert again.cached and again.sha256 == digits_tflite.sha256
    assert again.evaluation == digits_tflite.evaluation
    fresh = quantize_model(cfg, mode="int8", use_cache=False)
    assert not fresh.cached and fresh.size_bytes == digits_tflite.size_bytes
    # A cache entry damaged by hand is not trusted.
    Path(fresh.tflite_path).write_bytes(b"garbage")
    healed = quantize_model(cfg, mode="int8")
    assert not healed.cached and Path(healed.tflite_path).read_bytes()[4:8] == b"TFL3"


def test_cli_json(digits_project, tmp_path):
    out = tmp_path / "digits-dyn.tflite"
    res = CliRunner().invoke(main, ["quantize", "--config", str(digits_project), "--mode", "dynamic",
                                    "--out", str(out), "--output", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["mode"] == "dynamic" and data["tflite_path"] == str(out.resolve())
    assert data["size_bytes"] == out.stat().st_size < data["original_size_bytes"]
    assert data["ops_before"]["Dropout"] == 1
    assert data["evaluation"]["converted"]["accuracy"] > 90.0


def test_cli_text_report(digits_project, tmp_path):
    out = tmp_path / "m.tflite"
    res = CliRunner().invoke(main, ["quantize", "-c", str(digits_project / "mlfn.yaml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "size:" in text and "->" in text and "mode int8" in text
    assert "Dropout removed" in text and "BatchNormalization folded" in text
    assert "top-1" in text and "accuracy drop" in text


def test_cli_default_out_next_to_config(digits_project):
    res = CliRunner().invoke(main, ["quantize", "-c", str(digits_project), "-o", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tflite_path"] == str((digits_project / "model.tflite").resolve())
