"""Bad input: one clear sentence, a non-zero exit, and nothing half-written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.errors import AccuracyGateError, ModelError
from mlfn.model import quantize_model
from tests.model.helpers import leftovers, project


def run_cli(*args):
    return CliRunner().invoke(main, ["quantize", *map(str, args)])


def one_line_error(res, code=1) -> str:
    assert res.exit_code == code, (res.exit_code, res.output)
    assert res.stdout == ""
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("Error: ") and "Traceback" not in res.stderr
    return err


def test_missing_model(digits_project, tmp_path):
    cfg = project(tmp_path, digits_project, model=tmp_path / "nope.keras")
    err = one_line_error(run_cli("-c", cfg.source, "--out", tmp_path / "out.tflite"))
    assert "nope.keras does not exist" in err
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.parametrize("name,expected", [
    ("broken.keras", "is not a Keras archive"),
    ("broken.h5", "is not an HDF5 file"),
    ("broken.tflite", "is not a TFLite flatbuffer"),
    ("broken.onnx", r"unknown model format \(\.onnx\)"),
])
def test_corrupt_or_unknown_model(digits_project, tmp_path, name, expected):
    bad = tmp_path / name
    bad.write_bytes(b"\x00not a model at all" * 50)
    cfg = project(tmp_path, digits_project, model=bad)
    with pytest.raises(ModelError, match=expected):
        quantize_model(cfg, out_path=str(tmp_path / "out.tflite"))
    assert not (tmp_path / "out.tflite").exists()


def test_truncated_tflite(digits_project, digits_tflite, tmp_path):
    data = open(digits_tflite.tflite_path, "rb").read()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 3])
    cfg = project(tmp_path, digits_project, model=bad)
    with pytest.raises(ModelError, match="cut.tflite"):
        quantize_model(cfg)


def test_folder_without_saved_model(digits_project, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = project(tmp_path, digits_project, model=tmp_path / "empty")
    with pytest.raises(ModelError, match="without saved_model.pb"):
        quantize_model(cfg)


def test_representative_wrong_shape(digits_project, tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((10, 8, 8, 3), dtype="float32"))
    cfg = project(tmp_path, digits_project, mode="int8", representative_data=str(tmp_path / "rgb.npy"))
    err = one_line_error(run_cli("-c", cfg.source, "--out", tmp_path / "o.tflite"))
    assert "shape (8, 8, 3)" in err and "expects (8, 8, 1)" in err and "rgb.npy" in err
    assert not (tmp_path / "o.tflite").exists()
    assert not leftovers(tmp_path) and not leftovers(digits_project / ".mlfn")


def test_representative_wrong_dtype(digits_project, tmp_path):
    np.save(tmp_path / "ints.npy", np.zeros((10, 8, 8, 1), dtype="int64"))
    np.save(tmp_path / "text.npy", np.array([["a"] * 8] * 8))
    cfg = project(tmp_path, digits_project, mode="int8", representative_data=str(tmp_path / "ints.npy"))
    with pytest.raises(ModelError, match="dtype int64.*float32"):
        quantize_model(cfg)
    cfg = project(tmp_path, digits_project, mode="int8", representative_data=str(tmp_path / "text.npy"))
    with pytest.raises(ModelError, match="needs numbers"):
        quantize_model(cfg)


def test_int8_needs_representative_data(digits_project, tmp_path):
    cfg = project(tmp_path, digits_project, mode="int8", representative_data=None)
    with pytest.raises(ModelError, match="quantize.representative_data"):
        quantize_model(cfg)


def test_accuracy_gate(digits_project, tmp_path):
    """Calibrating on blank images ruins int8 ranges; the gate must catch it."""
    np.save(tmp_path / "blank.npy", np.zeros((20, 8, 8, 1), dtype="float32"))
    cfg = project(tmp_path, digits_project, mode="int8", representative_data=str(tmp_path / "blank.npy"),
                  max_accuracy_drop=2.0)
    out = tmp_path / "gated.tflite"
    with pytest.raises(AccuracyGateError) as e:
        quantize_model(cfg, out_path=str(out))
    msg = str(e.value)
    assert "max_accuracy_drop (2)" in msg and msg.count("%") == 2
    assert not out.exists()
    res = run_cli("-c", cfg.source, "--out", out)
    err = one_line_error(res, code=3)
    assert "quantize.max_accuracy_drop" in err
    # --max-accuracy-drop on the command line overrides the file
    res = run_cli("-c", cfg.source, "--out", out, "--max-accuracy-drop", 100, "-o", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["evaluation"]["accuracy_drop"] > 2.0


@pytest.fixture(scope="module")
def det_model(tmp_path_factory):
    """A SavedModel using MatrixDeterminant, which has no TFLite builtin kernel."""
    import tensorflow as tf

    class Det(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.eye(4))

        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.reshape(tf.linalg.det(x @ self.w), [-1, 1])}

    path = tmp_path_factory.mktemp("det") / "det_model"
    m = Det()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


def test_unsupported_op_named_and_select_tf_ops_opt_in(det_model, tmp_path):
    from mlfn.config import from_dict

    cfg_file = tmp_path / "mlfn.yaml"
    cfg_file.write_text(f"name: det\nmodel:\n  path: {det_model}\nquantize:\n  mode: none\n")
    err = one_line_error(run_cli("-c", cfg_file, "--out", tmp_path / "det.tflite"))
    assert "MatrixDeterminant" in err and "--allow-select-tf-ops" in err
    assert not (tmp_path / "det.tflite").exists()
    res = run_cli("-c", cfg_file, "--out", tmp_path / "det.tflite", "--allow-select-tf-ops", "-o", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ops_after"].get("FlexMatrixDeterminant") == 1 and data["select_tf_ops"] is True
    assert "needs full TensorFlow" in res.stderr and "Warning:" in res.stderr
    assert (tmp_path / "det.tflite").read_bytes()[4:8] == b"TFL3"
    # the same through mlfn.yaml
    cfg = from_dict({"name": "det", "model": {"path": str(det_model)},
                     "quantize": {"mode": "none", "allow_select_tf_ops": True}}, source=cfg_file)
    assert quantize_model(cfg).ops_after.get("FlexMatrixDeterminant") == 1


def test_unknown_extra_model(digits_project):
    res = run_cli("-c", digits_project, "--model", "ghost")
    err = one_line_error(res, code=2)
    assert "ghost" in err


def test_help_without_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from mlfn.cli import main; "
            "r = CliRunner().invoke(main, ['quantize', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--compare' in r.output and 'Examples' in r.output; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; import mlfn.model")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_runtime_setting_that_breaks_the_image_pipeline_is_one_sentence(digits_project, tmp_path, monkeypatch):
    """An image folder goes through the runtime's pipeline on the host; the runtime's own
    configuration error (here MLFN_MAX_IMAGE_PIXELS) is a ModelError, not a traceback."""
    from mlfn.model.data import _pipeline

    monkeypatch.setenv("MLFN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ModelError, match=r"calib cannot be pre-processed: MLFN_MAX_IMAGE_PIXELS is 'lots'"):
        _pipeline(["decode_image"], tmp_path, "calib")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if TensorFlow is asked to load a model: cheap checks must come first."""
    import mlfn.model.load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before a cheap check failed")

    monkeypatch.setattr(mlfn.model.load, "load_model", refuse)


def test_a_text_file_named_keras_is_refused_before_loading(digits_project, tmp_path, no_model_loading):
    text = tmp_path / "model.keras"
    text.write_text("these are my notes, not a model\n")
    cfg = project(tmp_path, digits_project, model=text)
    with pytest.raises(ModelError, match=r"model.keras is not a Keras archive .*point model.path at the real model"):
        quantize_model(cfg, mode="none", use_cache=False)


@pytest.mark.parametrize("key", ["representative_data", "validation_data"])
def test_missing_data_is_reported_before_loading_the_model(digits_project, tmp_path, no_model_loading, key):
    cfg = project(tmp_path, digits_project, **{key: str(tmp_path / "absent.npy")})
    with pytest.raises(ModelError, match=rf"quantize.{key} .*absent.npy does not exist"):
        quantize_model(cfg, mode="int8", use_cache=False)


def test_an_image_folder_without_decode_image_says_what_to_add(digits_project, tmp_path):
    import numpy as np

    from tests.model.helpers import write_pngs

    folder = tmp_path / "calibration"
    write_pngs(folder, np.random.default_rng(0).random((3, 8, 8, 1)), ["a.png", "b.png", "c.png"])
    cfg = project(tmp_path, digits_project, representative_data=str(folder))
    cfg = cfg.override({"pipeline.pre": [{"scale": {"factor": 0.5}}]})
    with pytest.raises(ModelError, match=r"folder of images, but pipeline.pre does not start with decode_image"):
        quantize_model(cfg, mode="int8", use_cache=False)
