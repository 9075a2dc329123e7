"""quantize.mode auto and int8-selective on a digits model that plain int8 breaks
(samples/digits/outliers.py: three huge weights per output channel of one Dense layer)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.config import from_dict
from mlfn.errors import AccuracyGateError, ConfigError
from mlfn.model import quantize_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outliers(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("mlfn_digits_outliers", ROOT / "samples" / "digits" / "outliers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path_factory.mktemp("outliers")
    trained = module.train_outlier_model(folder, seed=0)
    assert trained["accuracy"] > 90.0 and abs(trained["accuracy"] - trained["accuracy_before"]) < 0.5
    return folder


def config(folder: Path, **quantize):
    q = {"mode": "auto", "representative_data": "calibration.npy", "validation_data": "validation.npz",
         "max_accuracy_drop": 1.0, **quantize}
    data = {"name": "outliers", "model": {"path": "model.keras"}, "quantize": {k: v for k, v in q.items() if v is not None},
            "pipeline": {"post": ["softmax"]}}
    (folder / "mlfn.yaml").write_text(yaml.safe_dump(data))
    return from_dict(data, source=folder / "mlfn.yaml")


def test_plain_int8_fails_the_gate(outliers):
    with pytest.raises(AccuracyGateError, match="max_accuracy_drop"):
        quantize_model(config(outliers), mode="int8")


def test_auto_repairs_int8_with_float_layers_and_says_why(outliers):
    r = quantize_model(config(outliers))
    assert r.mode == "int8-selective" and r.auto["picked"] == "int8-selective"
    assert r.evaluation["accuracy_drop"] <= 1.0
    rows = {c["mode"]: c for c in r.auto["candidates"]}
    for smaller in ("int8", "dynamic"):  # both smaller files, both lose far more than a point
        assert rows[smaller]["status"] == "rejected" and rows[smaller]["size_bytes"] < r.size_bytes
        assert "exceeds quantize.max_accuracy_drop 1" in rows[smaller]["reason"]
    assert rows["float16"]["status"] == "larger" and r.size_bytes < rows["float16"]["size_bytes"]
    floated = [d["layer"] for d in r.selective["float_layers"]]
    assert floated and floated[0].startswith("mix") and any(n.startswith("narrow") for n in floated)
    assert 0 < len(floated) <= r.selective["layers"] * 0.5
    assert r.selective["size_cost_bytes"] == r.size_bytes - r.selective["int8_size_bytes"] > 0
    assert r.selective["attempts"][0]["float_layers"] == 0 and not r.selective["attempts"][0]["passed"]


def test_cached_auto_reproduces_its_choice_without_tensorflow(outliers, monkeypatch):
    first = quantize_model(config(outliers))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # any import of TensorFlow now fails
    again = quantize_model(config(outliers))
    assert again.mode == first.mode and again.sha256 == first.sha256
    assert again.auto == {**first.auto, "candidates": [{**c, "cached": c["status"] != "error"}
                                                       for c in first.auto["candidates"]]}


def test_cli_auto_text_names_float_layers_and_rejections(outliers, tmp_path):
    config(outliers)
    res = CliRunner().invoke(main, ["quantize", "-c", str(outliers), "--out", str(tmp_path / "m.tflite")])
    assert res.exit_code == 0, res.output
    assert "auto picked int8-selective" in res.stdout and "rejected" in res.stdout
    assert "mix" in res.stdout and "cost against plain int8" in res.stdout
    res = CliRunner().invoke(main, ["quantize", "-c", str(outliers), "-m", "auto", "-o", "json",
                                    "--out", str(tmp_path / "m.tflite")])
    assert json.loads(res.stdout)["auto"]["picked"] == "int8-selective"


def test_auto_without_validation_data_says_so_in_one_sentence(outliers, tmp_path):
    cfg = config(outliers, validation_data=None)
    with pytest.raises(ConfigError, match="quantize.mode auto needs validation data"):
        quantize_model(cfg)
    res = CliRunner().invoke(main, ["quantize", "-c", str(outliers), "--out", str(tmp_path / "m.tflite")])
    assert res.exit_code == 2 and res.stdout == ""
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "quantize.validation_data" in err[0] and "Traceback" not in res.stderr


def test_selective_needs_a_gate(outliers):
    with pytest.raises(ConfigError, match="int8-selective needs a gate"):
        quantize_model(config(outliers, max_accuracy_drop=None), mode="int8-selective")


def test_the_selective_cache_key_holds_its_options(outliers):
    a = quantize_model(config(outliers), mode="int8-selective")
    b = quantize_model(config(outliers, selective_max_float_share=0.25), mode="int8-selective")
    assert a.tflite_path != b.tflite_path and not b.cached
    assert len(b.selective["float_layers"]) <= 2
