"""`mlfn build` loads the staged function as the image will and runs it once before building:
configs that would build but not serve are refused, naming mlfn.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlfn.config import load_config
from mlfn.errors import ConfigError
from tests.image.conftest import edit_yaml
from mlfn.image import stage_function
from tests.model.small_models import small_models  # noqa: F401  (fixture)


@pytest.fixture
def project(project_copy) -> Path:
    return project_copy


def _stage_error(project: Path, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        stage_function(load_config(str(project)), tmp_path / "fn")
    assert not (tmp_path / "fn").exists()
    return str(e.value)


@pytest.mark.parametrize("source,expected", [
    ("def pre(x)\n    return x\n", "failed to import: SyntaxError"),
    ("def other(x):\n    return x\n", "has no function 'pre'"),
])
def test_a_broken_custom_step_fails_the_build(project, tmp_path, source, expected):
    (project / "steps.py").write_text(source)
    edit_yaml(project, lambda d: d["pipeline"]["pre"].append({"custom": {"file": "steps.py", "function": "pre"}}))
    def never(*args, **kwargs):
        raise AssertionError("quantized before the custom step was checked")

    with pytest.raises(ConfigError) as e:  # before any (slow) conversion
        stage_function(load_config(str(project)), tmp_path / "fn", quantize=never)
    assert expected in str(e.value) and "mlfn.yaml" in str(e.value) and "cannot load" in str(e.value)


def test_a_resize_that_does_not_match_the_model_fails_the_build(project, tmp_path):
    edit_yaml(project, lambda d: d["pipeline"]["pre"].__setitem__(2, {"resize": {"width": 28, "height": 28}}))
    message = _stage_error(project, tmp_path)
    assert "fails on an input of the model's shape" in message and "resize to" in message and "[28, 28, 1]" in message and "[8, 8, 1]" in message


def test_a_labels_file_shorter_than_the_outputs_fails_the_build(project, tmp_path):
    (project / "labels.txt").write_text("zero\none\ntwo\n")
    message = _stage_error(project, tmp_path)
    assert "has 3 labels, but the model has 10 outputs" in message


def test_quantize_rejects_the_unknown_steps_build_rejects(project):
    from mlfn.model import quantize_model

    edit_yaml(project, lambda d: d["pipeline"]["post"].insert(0, "sofmax"))
    with pytest.raises(ConfigError, match=r"pipeline\.post in .*mlfn\.yaml.*'sofmax' is unknown"):
        quantize_model(load_config(str(project)), mode="none")


def test_a_softmax_step_after_a_softmax_output_is_a_build_warning(small_models, tmp_path):
    (tmp_path / "mlfn.yaml").write_text(yaml.safe_dump({
        "name": "cnn", "model": {"path": str(small_models / "cnn_softmax.keras")},
        "quantize": {"mode": "none"},
        "pipeline": {"pre": ["decode_image", {"convert": {"mode": "RGB"}}, {"resize": {"width": 32, "height": 32}}],
                     "post": ["softmax", {"top_k": {"k": 2}}]}}))
    said = []
    stage_function(load_config(str(tmp_path)), tmp_path / "fn", progress=said.append)
    assert any(m.startswith("Warning: ") and "already a softmax" in m for m in said), said


def test_post_steps_that_cannot_follow_each_other_fail_the_build(project, tmp_path):
    """argmax after top_k gets top_k's dict, which the runtime cannot score."""
    (project / "labels.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    edit_yaml(project, lambda d: d["pipeline"].update(post=["softmax", {"top_k": {"k": 2}}, "argmax"]))
    assert "fails on an input of the model's shape" in _stage_error(project, tmp_path)


def test_a_binary_model_with_two_labels_builds(small_models, tmp_path):
    """One sigmoid score: a labels file naming both classes is not a mismatch."""
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    (tmp_path / "mlfn.yaml").write_text(yaml.safe_dump({
        "name": "binary", "model": {"path": str(small_models / "binary.h5")}, "quantize": {"mode": "none"},
        "pipeline": {"pre": ["decode_image", {"convert": {"mode": "RGB"}}, {"resize": {"width": 16, "height": 16}}],
                     "post": [{"threshold": {"value": 0.5}}], "labels": "labels.txt"}}))
    out = stage_function(load_config(str(tmp_path)), tmp_path / "fn")
    assert (out / "function.json").is_file()
