"""`mlfn init` on models mlfn has never seen: softmax outputs, SavedModels, two inputs, labels."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.config import from_dict
from mlfn.errors import ConfigError
from mlfn.project import init_project
from tests.model.small_models import small_models  # noqa: F401  (fixture)


def _written(path):
    return yaml.safe_load(path.read_text())


def test_init_adds_no_second_softmax_after_a_softmax_output(small_models, tmp_path):
    import keras
    from mlfn_runtime.pipeline import Pipeline

    result = init_project(str(small_models / "cnn_softmax.keras"), out=str(tmp_path / "a.yaml"))
    post = _written(tmp_path / "a.yaml")["pipeline"]["post"]
    assert result["output_activation"] == "softmax"
    assert not any("softmax" in step for step in post), post
    # the score the function reports is the model's own probability
    model = keras.models.load_model(small_models / "cnn_softmax.keras", compile=False)
    probs = np.asarray(model(np.random.default_rng(1).random((1, 32, 32, 3)).astype("float32")))[0]
    top = Pipeline(post, str(tmp_path), stage="post")(probs)
    assert top["score"] == pytest.approx(float(probs.max()), rel=1e-6)
    # logits still get a softmax
    init_project(str(small_models / "cnn_logits.keras"), out=str(tmp_path / "b.yaml"))
    assert _written(tmp_path / "b.yaml")["pipeline"]["post"][0] == {"softmax": {}}


def test_init_reads_a_savedmodel_signature_relative_path_and_labels(small_models, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(small_models / "cnn_softmax", models / "saved_model")
    (models / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    result = init_project("../models/saved_model")
    data = _written(project / "mlfn.yaml")
    assert data["model"]["path"] == "../models/saved_model"
    assert result["input_shape"] == [None, 32, 32, 3]
    assert {"resize": {"width": 32, "height": 32}} in data["pipeline"]["pre"]
    assert data["pipeline"]["post"] == [{"top_k": {"k": 5}}]
    assert data["pipeline"]["labels"] == "../models/labels.txt"
    assert result["warnings"] == []
    # a labels file that does not match the model's classes is reported
    (models / "labels.txt").write_text("a\nb\nc\n")
    again = init_project("../models/saved_model", force=True)
    assert "3 labels but the model has 5 outputs" in again["warnings"][0]


@pytest.mark.parametrize("name", ["two.keras", "two"])
def test_init_reports_every_input_of_a_two_input_model(small_models, tmp_path, name):
    r = CliRunner().invoke(main, ["init", str(small_models / name), "--out", str(tmp_path), "-o", "json"])
    assert r.exit_code == 0, r.output
    import json

    inputs = json.loads(r.output)["inputs"]
    assert [(i["name"], i["shape"]) for i in inputs] == [("a", [None, 4]), ("b", [None, 3])]
    assert _written(tmp_path / "mlfn.yaml")["pipeline"]["pre"] == []


def test_function_names_that_cannot_name_an_image_are_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        from_dict({"name": "My Model!"})
    assert "'My Model!'" in str(e.value) and "'my-model'" in str(e.value)
    model = tmp_path / "My Model.tflite"
    model.write_bytes(b"not a model")
    r = CliRunner().invoke(main, ["init", str(model), "--out", str(tmp_path), "-o", "json"])
    assert r.exit_code == 0, r.output
    assert _written(tmp_path / "mlfn.yaml")["name"] == "my-model"
    r = CliRunner().invoke(main, ["init", str(model), "--out", str(tmp_path), "--force", "--name", "Bad Name"])
    assert r.exit_code != 0 and "--name is 'Bad Name'" in r.output and "Traceback" not in r.output


def test_init_leaves_scaling_to_a_model_that_rescales_and_thresholds_a_sigmoid(small_models, tmp_path):
    rescaled = init_project(str(small_models / "rescaled.keras"), out=str(tmp_path / "r.yaml"))
    assert not any("scale" in step for step in rescaled["pre"]), rescaled["pre"]
    assert rescaled["post"] == [{"top_k": {"k": 5}}]  # a Softmax layer is a softmax output too
    binary = init_project(str(small_models / "binary.h5"), out=str(tmp_path / "b.yaml"))
    assert binary["input_shape"] == [None, 16, 16, 3] and binary["post"] == [{"threshold": {"value": 0.5}}]


def test_init_scales_a_mobilenet_to_minus_one_one(tmp_path):
    """keras.applications.MobileNetV2 is trained on preprocess_input's [-1, 1] pixels, not [0, 1]."""
    import keras

    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, include_top=False, alpha=0.35)
    i = keras.Input((32, 32, 3))
    head = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(base(i)))
    keras.Model(i, head).save(tmp_path / "flowers.keras")  # nested, as in transfer learning
    result = init_project(str(tmp_path / "flowers.keras"), out=str(tmp_path / "mlfn.yaml"))
    assert result["pre"][-1] == {"normalize": {"mean": [127.5], "std": [127.5]}}
    assert result["post"] == [{"top_k": {"k": 5}}]


def test_init_on_a_tflite_model_reads_its_softmax_and_input_name(small_models, tmp_path):
    from mlfn.config import load_config
    from mlfn.model import quantize_model

    (tmp_path / "mlfn.yaml").write_text(yaml.safe_dump({
        "name": "cnn", "model": {"path": str(small_models / "cnn_softmax.keras")},
        "quantize": {"cache_dir": str(small_models / "cache")}}))
    quantize_model(load_config(str(tmp_path)), mode="dynamic", out_path=str(tmp_path / "cnn.tflite"))
    result = init_project(str(tmp_path / "cnn.tflite"), out=str(tmp_path / "other.yaml"))
    assert result["inputs"] == [{"name": "image", "shape": [None, 32, 32, 3], "dtype": "float32"}]
    assert result["output_activation"] == "softmax" and result["post"] == [{"top_k": {"k": 5}}]
