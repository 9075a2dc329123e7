"""Function staging: mlfn.yaml -> function.json + models + labels, as actions/README.md says."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlfn.image import stage_function
from mlfn.config import load_config
from mlfn.errors import ConfigError
from tests.image.conftest import edit_yaml


@pytest.fixture
def project(project_copy) -> Path:
    return project_copy


def test_function_json_matches_the_contract(project, tmp_path):
    cfg = load_config(str(project))
    out = stage_function(cfg, tmp_path / "fn")
    doc = json.loads((out / "function.json").read_text())
    assert doc["name"] == "digits"
    assert doc["runtime"] == "litert"
    assert doc["serving"] == {"max_batch_size": 32, "max_payload_bytes": 1048576, "interpreter": "per-thread",
                              "num_threads": 1, "workers": 8}
    (m,) = doc["models"]
    assert m["name"] == "digits" and m["path"] == "models/digits/model.tflite"
    model = out / m["path"]
    assert model.is_file() and hashlib.sha256(model.read_bytes()).hexdigest() == m["sha256"].split(":")[-1]
    assert m["quantization"] == "int8"
    assert m["pre"] == [{"decode_image": {}}, {"convert": {"mode": "L"}}, {"resize": {"width": 8, "height": 8}},
                        {"scale": {"factor": 0.00392156862745098}}]
    # pipeline.labels becomes the labels of top_k, copied next to function.json
    assert m["post"] == [{"softmax": {}}, {"top_k": {"k": 3, "labels": "labels.txt"}}]
    assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    assert not (tmp_path / "fn.partial").exists()


def test_the_runtime_loads_the_staged_function(project, tmp_path):
    from mlfn_runtime.function import load_function

    out = stage_function(load_config(str(project)), tmp_path / "fn")
    fn = load_function(str(out))
    assert fn.name == "digits" and list(fn.models) == ["digits"]
    model = fn.models["digits"]
    assert model.quantization == "int8" and model.runner.input_names == ["image"]
    assert model.runner.inputs[0].shape == (-1, 8, 8, 1) and model.runner.outputs[0].shape == (-1, 10)
    assert [s.name for s in model.pre.steps] == ["decode_image", "convert", "resize", "scale"]
    assert model.pre.takes_images and model.pre.steps[2].width == 8 and model.pre.steps[3].factor == 1 / 255
    assert [s.name for s in model.post.steps] == ["softmax", "top_k"] and model.post.steps[1].k == 3
    assert model.post.steps[1].names == [str(i) for i in range(10)]  # labels.txt, bundled next to function.json


def test_custom_step_files_and_outside_labels_are_bundled(project, tmp_path):
    outside = tmp_path / "elsewhere" / "names.txt"
    outside.parent.mkdir()
    outside.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    (project / "steps").mkdir()
    (project / "steps" / "post.py").write_text("def clip(x, **kw):\n    return x\n")
    (project / "extra.txt").write_text("x\n")

    def change(d):
        d["pipeline"]["labels"] = str(outside)
        d["pipeline"]["post"].insert(0, {"custom": {"file": "steps/post.py", "function": "clip"}})
        d.setdefault("build", {})["custom_files"] = ["extra.txt"]

    edit_yaml(project, change)
    out = stage_function(load_config(str(project)), tmp_path / "fn")
    doc = json.loads((out / "function.json").read_text())
    post = doc["models"][0]["post"]
    assert post[0] == {"custom": {"file": "steps/post.py", "function": "clip"}}
    assert post[-1]["top_k"]["labels"] == "files/names.txt"
    assert (out / "files/names.txt").read_text().startswith("digit 0")
    assert (out / "steps/post.py").is_file() and (out / "extra.txt").is_file()


def test_bad_pipeline_is_a_config_error_naming_mlfn_yaml(project, tmp_path):
    edit_yaml(project, lambda d: d["pipeline"]["pre"].append({"resize": {"width": "wide"}}))
    with pytest.raises(ConfigError) as e:
        stage_function(load_config(str(project)), tmp_path / "fn")
    assert "mlfn.yaml" in str(e.value) and "pipeline.pre" in str(e.value) and "resize" in str(e.value)
    assert not (tmp_path / "fn").exists()


def test_unknown_step_is_rejected(project, tmp_path):
    edit_yaml(project, lambda d: d["pipeline"]["post"].append("teleport"))
    with pytest.raises(ConfigError, match="teleport"):
        stage_function(load_config(str(project)), tmp_path / "fn")


def test_step_in_the_wrong_stage_is_rejected(project, tmp_path):
    edit_yaml(project, lambda d: d["pipeline"]["pre"].append("softmax"))
    with pytest.raises(ConfigError) as e:
        stage_function(load_config(str(project)), tmp_path / "fn")
    assert "pipeline.pre" in str(e.value) and "softmax" in str(e.value) and "post-processing" in str(e.value)


def test_missing_labels_file_names_the_key(project, tmp_path):
    edit_yaml(project, lambda d: d["pipeline"].update(labels="nope.txt"))
    with pytest.raises(ConfigError, match=r"pipeline.labels .*nope.txt.*does not exist"):
        stage_function(load_config(str(project)), tmp_path / "fn")


def test_context_holds_exactly_the_layers(project):
    """The build context: Dockerfile + one folder per layer; the function staged beside it."""
    from mlfn.image.context import prepare_context

    cfg = load_config(str(project), overrides={"build.context_dir": "out/ctx"})
    ctx = prepare_context(cfg)
    assert ctx.path == project / "out" / "ctx"
    assert sorted(p.name for p in ctx.path.iterdir()) == [".dockerignore", "Dockerfile", "config", "deps", "models",
                                                           "runtime"]
    assert (ctx.function_dir / "function.json").is_file() and ctx.function_dir.parent == ctx.path.parent
    assert (ctx.path / "models/models/digits/model.tflite").is_file()
    assert not (ctx.path / "config/models").exists()
    assert (ctx.path / "config/function.json").is_file() and (ctx.path / "config/labels.txt").is_file()
    assert (ctx.path / "runtime/mlfn_runtime/__init__.py").is_file()
    assert list((ctx.path / "runtime/mlfn_runtime/__pycache__").glob("*.cpython-311.pyc"))
    deps = ctx.path / "deps"
    assert (deps / "ai_edge_litert/interpreter.pyc").is_file() and (deps / "numpy").is_dir() and (deps / "PIL").is_dir()
    assert not (deps / "ai_edge_litert/libLiteRtWebGpuAccelerator.so").exists()
    assert not list(deps.glob("numpy/_core/tests"))
    assert not (deps / "bin").exists()
    # identical inputs, identical content hash; a different pipeline, a different one
    again = prepare_context(cfg)
    assert again.content_hash == ctx.content_hash and again.default_tag == ctx.default_tag
    other = prepare_context(cfg.override({"pipeline.post": ["softmax"]}))
    assert other.content_hash != ctx.content_hash and other.model_sha256 == ctx.model_sha256
    assert other.pipeline_hash != ctx.pipeline_hash


def test_argmax_and_threshold_labels_are_bundled_and_defaulted(project, tmp_path):
    """Every step that takes `labels` (not only top_k) gets its file copied into the
    function folder and pipeline.labels as its default; else the image cannot start
    (labels file missing) or answers indices instead of labels."""
    (project / "classes").mkdir()
    (project / "classes" / "names.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    edit_yaml(project, lambda d: d["pipeline"].update(post=[
        "softmax", {"argmax": {"labels": "classes/names.txt"}}]))
    out = stage_function(load_config(str(project)), tmp_path / "fn")
    doc = json.loads((out / "function.json").read_text())
    assert doc["models"][0]["post"][-1] == {"argmax": {"labels": "classes/names.txt"}}
    assert (out / "classes" / "names.txt").is_file()

    from mlfn_runtime.function import load_function

    post = load_function(str(out)).default_model.post
    assert post.steps[-1].names[:2] == ["digit 0", "digit 1"]

    edit_yaml(project, lambda d: d["pipeline"].update(post=["sigmoid", {"threshold": {"value": 0.5}}]))
    out = stage_function(load_config(str(project)), tmp_path / "fn2")
    post = json.loads((out / "function.json").read_text())["models"][0]["post"]
    assert post[-1] == {"threshold": {"value": 0.5, "labels": "labels.txt"}}
    assert load_function(str(out)).default_model.post.steps[-1].names[:2] == ["0", "1"]


def test_outside_files_with_the_same_name_do_not_overwrite_each_other(project, tmp_path):
    a, b = tmp_path / "a" / "names.txt", tmp_path / "b" / "names.txt"
    for path, word in ((a, "alpha"), (b, "beta")):
        path.parent.mkdir()
        path.write_text("".join(f"{word} {i}\n" for i in range(10)))
    edit_yaml(project, lambda d: d["pipeline"].update(post=[
        "softmax", {"top_k": {"k": 2, "labels": str(a)}}, {"threshold": {"value": 0.1, "labels": str(b)}}]))
    out = stage_function(load_config(str(project)), tmp_path / "fn")
    post = json.loads((out / "function.json").read_text())["models"][0]["post"]
    first, second = post[1]["top_k"]["labels"], post[2]["threshold"]["labels"]
    assert first != second
    assert (out / first).read_text().startswith("alpha 0") and (out / second).read_text().startswith("beta 0")


@pytest.mark.parametrize("key,name", [("model.name", "../../escaped"), ("name", "a/b"), ("models", ".."),
                                      ("model.name", "v1:predict")])
def test_a_model_name_that_is_not_one_path_segment_is_a_config_error(project, tmp_path, key, name):
    """A model name is models/NAME/ in the function folder and a segment of /v2/models/NAME:
    '../../x' would write the model outside the staged folder."""
    def change(d):
        if key == "models":
            d["models"] = [{"name": name, "path": "model.keras"}]
        elif key == "name":
            d["name"] = name
            d.get("model", {}).pop("name", None)
        else:
            d.setdefault("model", {})["name"] = name

    edit_yaml(project, change)
    with pytest.raises(ConfigError, match="a model name cannot be") as e:
        stage_function(load_config(str(project)), tmp_path / "out" / "fn")
    assert repr(name) in str(e.value) and "mlfn.yaml" in str(e.value)
    assert not list(tmp_path.rglob("model.tflite"))


def test_context_is_readable_by_the_non_root_user_under_a_strict_umask(project):
    """COPY keeps modes: a context staged under umask 077 must still be world-readable, or
    user 65532 cannot read function.json in the image."""
    import os
    import stat

    from mlfn.image.context import prepare_context

    cfg = load_config(str(project), overrides={"build.context_dir": "out/ctx"})
    old = os.umask(0o077)
    try:
        ctx = prepare_context(cfg)
    finally:
        os.umask(old)
    for folder in ("config", "models", "runtime"):
        for p in [ctx.path / folder, *(ctx.path / folder).rglob("*")]:
            mode = stat.S_IMODE(p.lstat().st_mode)
            if p.is_symlink():
                continue
            assert mode & 0o004 and (not p.is_dir() or mode & 0o001), f"{p} is {oct(mode)}"
    assert stat.S_IMODE((ctx.path / "config" / "function.json").stat().st_mode) == 0o644
