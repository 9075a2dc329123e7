"""Every input format and quantization variant, on the trained digits sample."""
from __future__ import annotations

import numpy as np
import pytest

from mlfn.errors import ModelError
from mlfn.model import quantize_model
from tests.model.helpers import project, write_pngs


def test_saved_model_default_signature(digits_project, digits_tflite, tmp_path):
    cfg = project(tmp_path, digits_project, model=digits_project / "model", mode="int8")
    r = quantize_model(cfg)
    assert r.source_format == "saved_model" and r.mode == "int8"
    # TF graph ops before (the frozen serving signature), TFLite ops after.
    assert r.ops_before.get("Conv2D") == 2 and r.ops_before.get("MatMul") == 2
    assert r.ops_after.get("CONV_2D") == 2
    ev = r.evaluation
    assert ev["original"]["accuracy"] == pytest.approx(digits_tflite.evaluation["original"]["accuracy"], abs=0.01)
    assert ev["accuracy_drop"] <= 2.0


def test_saved_model_signature_choice(digits_project, tmp_path):
    cfg = project(tmp_path, digits_project, model=digits_project / "model", signature="no_such_sig")
    with pytest.raises(ModelError) as e:
        quantize_model(cfg, mode="none")
    msg = str(e.value)
    assert "no signature 'no_such_sig'" in msg and "serving_default" in msg
    other = [s for s in msg.split("one of: ")[1].rstrip(".").split(", ") if s != "serving_default"]
    if other:  # Keras' export also writes a 'serve' endpoint
        cfg2 = project(tmp_path / "b", digits_project, model=digits_project / "model", signature=other[0])
        assert quantize_model(cfg2, mode="none").ops_after.get("CONV_2D") == 2


def test_h5(digits_project, tmp_path):
    import keras

    model = keras.models.load_model(digits_project / "model.keras", compile=False)
    h5 = tmp_path / "digits.h5"
    model.save(h5)
    cfg = project(tmp_path, digits_project, model=h5)
    r = quantize_model(cfg, mode="dynamic")
    assert r.source_format == "h5" and r.ops_before.get("Dropout") == 1
    assert r.evaluation["accuracy_drop"] <= 2.0


def test_tflite_passthrough_is_evaluated(digits_project, digits_tflite, tmp_path):
    cfg = project(tmp_path, digits_project, model=digits_tflite.tflite_path)
    r = quantize_model(cfg)
    assert r.mode == "passthrough" and r.source_format == "tflite"
    assert r.sha256 == digits_tflite.sha256  # untouched
    assert r.ops_before == r.ops_after == digits_tflite.ops_after
    assert r.evaluation["original"] is None
    assert r.evaluation["converted"]["accuracy"] == pytest.approx(digits_tflite.evaluation["converted"]["accuracy"])
    assert any("passed through" in w for w in r.warnings)


@pytest.mark.parametrize("io_type", ["int8", "uint8"])
def test_int8_integer_io(digits_project, tmp_path, io_type):
    from ai_edge_litert.interpreter import Interpreter

    cfg = project(tmp_path, digits_project, mode="int8", input_type=io_type, output_type=io_type)
    r = quantize_model(cfg)
    it = Interpreter(model_path=r.tflite_path)
    assert it.get_input_details()[0]["dtype"].__name__ == io_type
    assert it.get_output_details()[0]["dtype"].__name__ == io_type
    assert r.input_type == r.output_type == io_type
    # the evaluator quantizes inputs and dequantizes outputs with the model's own parameters
    assert r.evaluation["accuracy_drop"] <= 2.0


def test_int16x8_rejects_int8_io(digits_project, tmp_path):
    cfg = project(tmp_path, digits_project, mode="int16x8", input_type="int8")
    with pytest.raises(ModelError, match="quantize.input_type is 'int8'.*int16x8"):
        quantize_model(cfg)


def test_image_folders_through_the_pipeline(digits_project, digits_tflite, tmp_path):
    """Calibrate on PNGs and validate on label folders, both run through pipeline.pre."""
    cal = np.load(digits_project / "calibration.npy")
    with np.load(digits_project / "validation.npz") as z:
        xv, yv = z["x"], z["y"]
    write_pngs(tmp_path / "cal", cal[:40], [f"{i:03d}.png" for i in range(40)])
    write_pngs(tmp_path / "val", xv[:150], [f"{int(yv[i])}/{i}.png" for i in range(150)])
    cfg = project(tmp_path / "p", digits_project, mode="int8", representative_data=str(tmp_path / "cal"),
                  representative_samples=30, validation_data=str(tmp_path / "val"))
    r = quantize_model(cfg)
    assert r.sha256 != digits_tflite.sha256  # calibrated on different data
    ev = r.evaluation
    assert ev["samples"] == 150 and ev["validation_data"] == str(tmp_path / "val")
    assert ev["converted"]["accuracy"] > 90.0 and ev["accuracy_drop"] <= 3.0


def test_regression_reports_mse(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))[:, None]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=3, verbose=0)
    model.save(tmp_path / "reg.keras")
    np.save(tmp_path / "cal.npy", x[:64])
    np.savez(tmp_path / "val.npz", x=x[200:], y=y[200:])
    from mlfn.config import from_dict

    cfg = from_dict({"name": "reg", "model": {"path": "reg.keras"},
                     "quantize": {"mode": "int8", "representative_data": "cal.npy", "validation_data": "val.npz",
                                  "max_accuracy_drop": 1.0}},
                    source=tmp_path / "mlfn.yaml")
    r = quantize_model(cfg)
    ev = r.evaluation
    assert ev["task"] == "regression"
    assert "accuracy" not in ev["converted"] and ev["converted"]["mse"] > 0
    assert ev["converted"]["mse"] == pytest.approx(ev["original"]["mse"], rel=0.5)


def test_per_tensor_is_smaller(digits_project, digits_tflite, tmp_path):
    cfg = project(tmp_path, digits_project, mode="int8", per_channel=False)
    r = quantize_model(cfg)
    assert not r.per_channel and digits_tflite.per_channel
    # one scale per weight tensor instead of one (scale, zero point) per output channel
    assert r.size_bytes < digits_tflite.size_bytes
    assert r.evaluation["accuracy_drop"] <= 2.0


def test_extra_model(digits_project, tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from mlfn.cli import main
    from mlfn.config import load_config

    cfg = project(tmp_path, digits_project, mode="int8")
    data = yaml.safe_load(cfg.source.read_text())
    data["models"] = [{"name": "digits-saved", "path": str(digits_project / "model"), "quantize": "dynamic"}]
    cfg.source.write_text(yaml.safe_dump(data))
    cfg = load_config(str(cfg.source))
    r = quantize_model(cfg, model=cfg.models[0])
    assert r.model_name == "digits-saved" and r.mode == "dynamic" and r.source_format == "saved_model"
    res = CliRunner().invoke(main, ["quantize", "-c", cfg.source, "--model", "digits-saved", "-o", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["sha256"] == r.sha256 and out["tflite_path"] == str(tmp_path / "digits-saved.tflite")


def test_two_input_model_npz_by_input_name(tmp_path):
    """Representative and validation .npz arrays are matched to inputs by name."""
    import keras

    from mlfn.config import from_dict

    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 3)).astype("float32")
    b = rng.normal(size=(300, 5)).astype("float32")
    y = (a.sum(axis=1) - 2.0 * b.sum(axis=1))[:, None].astype("float32")
    keras.utils.set_random_seed(1)
    ia, ib = keras.Input((3,), name="a"), keras.Input((5,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8)(ia), keras.layers.Dense(8)(ib)])
    model = keras.Model([ia, ib], keras.layers.Dense(1)(h))
    model.compile("adam", "mse")
    model.fit([a, b], y, epochs=20, verbose=0)
    model.save(tmp_path / "two.keras")
    np.savez(tmp_path / "cal.npz", b=b[:50], a=a[:50])  # keys deliberately not in input order
    np.savez(tmp_path / "val.npz", b=b[250:], a=a[250:], y=y[250:])
    cfg = from_dict({"name": "two", "model": {"path": "two.keras"},
                     "quantize": {"mode": "int8", "representative_data": "cal.npz", "validation_data": "val.npz"}},
                    source=tmp_path / "mlfn.yaml")
    r = quantize_model(cfg)
    ev = r.evaluation
    assert ev["task"] == "regression"
    # wrong input order would feed (5,) into (3,) or give a wildly different error
    assert ev["converted"]["mse"] == pytest.approx(ev["original"]["mse"], rel=0.25, abs=0.05)
    np.savez(tmp_path / "bad.npz", a=a[:50], c=b[:50])
    cfg.quantize.representative_data = str(tmp_path / "bad.npz")
    with pytest.raises(ModelError, match="no array for model input 'b'"):
        quantize_model(cfg, use_cache=False)
