"""The data plane: load_function + Function.predict/infer, without HTTP."""
import json
import sys

import numpy as np
import pytest

from mlfn_runtime.errors import ConfigurationError, CustomStepError, InvalidInput, NotFound
from mlfn_runtime.function import load_function

from .conftest import DIGITS_POST, DIGITS_PRE, b64, digit_png, make_function_dir


@pytest.fixture(scope="module")
def fn(digits_dir):
    return load_function(str(digits_dir))


def test_load_function_reads_function_json(fn, digits_dir):
    assert fn.name == "digits" and list(fn.models) == ["digits"]
    m = fn.default_model
    assert m.quantization == "int8" and m.pre.takes_images and len(m.post) == 2
    assert fn.serving.max_batch_size == 32 and fn.base_dir == str(digits_dir)


def test_predict_one_image_gives_top_k_with_labels(fn, digits):
    x, y = digits
    out = fn.predict({"image": b64(digit_png(x[0]))})
    assert out["model"] == "digits" and len(out["predictions"]) == 1
    p = out["predictions"][0]
    assert p["label"] == str(y[0]) and p["index"] == int(y[0]) and 0 < p["score"] <= 1
    assert len(p["top_k"]) == 3 and p["top_k"][0]["label"] == p["label"]
    assert p["top_k"][0]["score"] >= p["top_k"][1]["score"] >= p["top_k"][2]["score"]


def test_predict_batch_of_images_is_accurate(fn, digits):
    x, y = digits
    out = fn.predict({"images": [b64(digit_png(x[i])) for i in range(32)]})
    labels = [int(p["label"]) for p in out["predictions"]]
    assert len(labels) == 32 and np.mean(np.array(labels) == y[:32]) > 0.9


def test_predict_images_match_tensor_inputs(fn, digits):
    """An image pipeline is skipped for numeric tensors (they are model inputs as they are)."""
    x, _ = digits
    pixels = np.rint(x[:3] * 255) / 255  # what the PNG round trip gives
    by_image = fn.predict({"images": [b64(digit_png(x[i])) for i in range(3)]})["predictions"]
    by_tensor = fn.predict({"inputs": pixels[:, :, :, None].tolist()})["predictions"]
    by_instances = fn.predict({"instances": pixels.tolist()})["predictions"]  # [8,8] fits [8,8,1]
    for a, b, c in zip(by_image, by_tensor, by_instances):
        assert a["index"] == b["index"] == c["index"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-6) == c["score"]


def test_jpeg_and_resize_from_larger_images(fn, digits):
    x, y = digits
    out = fn.predict({"images": [b64(digit_png(x[i], "PNG", size=(64, 64))) for i in range(10)]})
    assert np.mean([int(p["label"]) == y[i] for i, p in enumerate(out["predictions"])]) >= 0.8
    out = fn.predict({"image": {"b64": b64(digit_png(x[0], "JPEG", size=(80, 80)))}})
    assert out["predictions"][0]["index"] in range(10)


@pytest.mark.parametrize("request_,message", [
    ([1, 2], "must be a JSON object"),
    ({}, "has no input"),
    ({"image": "aGVsbG8="}, "'image': is not an image: 5 bytes of text starting 'hello'"),
    ({"image": "!!!"}, "'image': is not valid base64"),
    ({"image": 5}, "'image' must be a base64-encoded image"),
    ({"images": ["aGVsbG8="]}, "'images[0]': is not an image"),
    ({"images": []}, "'images' must be a non-empty list"),
    ({"inputs": [[1, 2], [3]]}, "'inputs' is not a rectangular"),
    ({"inputs": [[[["a"]]]]}, "'inputs' must hold only numbers"),
    ({"inputs": [[float("nan")] * 64]}, "'inputs' holds NaN or infinite values"),
    ({"inputs": np.zeros((1, 3, 3)).tolist()}, "'inputs[0]' has shape [3, 3] but model 'digits' takes [8, 8, 1]"),
    ({"instances": [[0.0] * 64, "aGVsbG8="]}, "'instances[1]': is not an image"),
    ({"image": "x", "inputs": [1]}, "send only one of"),
    ({"model": 3, "image": "x"}, "'model' must be a model name"),
])
def test_bad_requests_name_the_field(fn, request_, message):
    with pytest.raises(InvalidInput) as e:
        fn.predict(request_)
    assert message in str(e.value)


def test_unknown_model_is_not_found(fn):
    with pytest.raises(NotFound, match="model 'nope' is not in function 'digits'"):
        fn.predict({"model": "nope", "inputs": np.zeros((1, 8, 8, 1)).tolist()})


def test_max_batch_size_is_enforced(tmp_path, rt_models, digits):
    d = make_function_dir(tmp_path / "f", rt_models, serving={"max_batch_size": 4})
    f = load_function(str(d))
    with pytest.raises(InvalidInput, match=r"'images' holds 5 inputs; this function takes at most 4 .*serving.max_batch_size"):
        f.predict({"images": [b64(digit_png(digits[0][0]))] * 5})
    assert len(f.predict({"images": [b64(digit_png(digits[0][0]))] * 4})["predictions"]) == 4


def test_several_models_fan_out(tmp_path, rt_models, digits):
    d = make_function_dir(tmp_path / "multi", rt_models, models=[
        {"name": "q", "file": "digits_int8.tflite", "pre": DIGITS_PRE, "post": DIGITS_POST},
        {"name": "f", "file": "digits_float.tflite", "pre": DIGITS_PRE, "post": ["argmax"]},
    ])
    f = load_function(str(d))
    img = b64(digit_png(digits[0][0]))
    out = f.predict({"image": img})
    assert set(out["results"]) == {"q", "f"}
    assert out["results"]["q"]["predictions"][0]["index"] == out["results"]["f"]["predictions"][0]["index"] == digits[1][0]
    assert "top_k" not in out["results"]["f"]["predictions"][0]
    one = f.predict({"image": img, "model": "f"})
    assert one["model"] == "f" and one["predictions"] == out["results"]["f"]["predictions"]
    named = f.predict({"image": img, "models": ["f"]})
    assert list(named["results"]) == ["f"]


def test_tensor_pipeline_runs_for_numeric_inputs(tmp_path, rt_models):
    d = make_function_dir(tmp_path / "tab", rt_models, models=[
        {"name": "two", "file": "two_io.tflite", "pre": [], "post": ["identity"]}])
    f = load_function(str(d))
    out = f.predict({"inputs": {"a": [[1, 2, 3]], "b": [[10, 20, 30]]}})
    p = out["predictions"][0]
    assert p == {"output_0": [11.0, 22.0, 33.0], "output_1": [10.0, 40.0, 90.0]}
    out = f.predict({"instances": [{"a": [1, 1, 1], "b": [2, 2, 2]}, {"a": [0, 0, 0], "b": [1, 1, 1]}]})
    assert [p["output_1"] for p in out["predictions"]] == [[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]
    with pytest.raises(InvalidInput, match="takes tensors, not encoded images"):
        f.predict({"image": "aGVsbG8="})


def test_custom_steps_in_function_json(tmp_path, rt_models, digits):
    files = {"pre.py": "import numpy as np\ndef flip(x):\n    return np.asarray(x)[::-1]\n",
             "post.py": "def label(y):\n    if y is None:\n        pass\n    return {'digit': int(y.argmax()), 'x': 1 / 0 if y.max() > 1e9 else 0}\n"}
    d = make_function_dir(tmp_path / "custom", rt_models, files=files, models=[
        {"name": "d", "file": "digits_float.tflite",
         "pre": DIGITS_PRE + [{"custom": {"file": "pre.py", "function": "flip"}}],
         "post": [{"custom": {"file": "post.py", "function": "label"}}]}])
    f = load_function(str(d))
    x, _ = digits
    img = x[3][::-1]  # the custom step flips it back
    out = f.predict({"image": b64(digit_png(img))})
    assert out["predictions"][0]["digit"] == digits[1][3]
    with pytest.raises(CustomStepError, match=r"post.py, line 4\) raised ZeroDivisionError"):
        f.predict({"inputs": [np.full((8, 8, 1), 1e12).tolist()]})


def test_bad_function_json_is_a_configuration_error(tmp_path, rt_models):
    with pytest.raises(ConfigurationError, match="no function.json"):
        load_function(str(tmp_path))
    d = make_function_dir(tmp_path / "bad", rt_models, models=[
        {"name": "d", "file": "digits_float.tflite", "pre": [{"resize": {"width": 8}}]}])
    with pytest.raises(ConfigurationError, match="model 'd' in .*pre step 1 'resize': parameter 'height' is required"):
        load_function(str(d))
    spec = json.loads((d / "function.json").read_text())
    spec["models"][0]["pre"] = []
    spec["serving"]["interpreter"] = "pool"
    (d / "function.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigurationError, match="serving.interpreter"):
        load_function(str(d))


def test_infer_tensors_and_outputs_selection(tmp_path, rt_models, fn, digits):
    out = fn.infer("digits", {"pixels": np.zeros((2, 8, 8, 1), np.float32)})
    assert list(out) == ["output_0"] and out["output_0"].shape == (2, 10)
    img = b64(digit_png(digits[0][0]))
    out = fn.infer(None, {"pixels": [img, img]})  # encoded images go through pre-processing
    assert out["output_0"].shape == (2, 10) and int(out["output_0"][0].argmax()) == digits[1][0]
    with pytest.raises(InvalidInput, match="has no output 'nope'"):
        fn.infer("digits", {"pixels": np.zeros((1, 8, 8, 1))}, ["nope"])


def test_runtime_never_imports_tensorflow(digits_dir, digits):
    """In a fresh interpreter (other tests in this process may have imported TensorFlow):
    load the function and predict, then no tensorflow/keras module may be loaded."""
    import json
    import subprocess

    x, _ = digits
    code = (
        "import json, sys\n"
        "from mlfn_runtime.function import load_function\n"
        f"fn = load_function({str(digits_dir)!r})\n"
        "out = fn.predict({'inputs': json.loads(sys.argv[1])})\n"
        "assert out['predictions'], out\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code, json.dumps(x[:1].tolist())], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_serving_settings_from_env_override_function_json():
    from mlfn_runtime.serving import Serving

    s = Serving.from_dict({"interpreter": "lock", "max_batch_size": 4},
                          {"MLFN_SERVING_INTERPRETER": "per-thread", "MLFN_SERVING_MAX_BATCH_SIZE": "16"})
    assert s.interpreter == "per-thread" and s.max_batch_size == 16
    with pytest.raises(ConfigurationError, match="MLFN_SERVING_WORKERS must be an integer"):
        Serving.from_dict({}, {"MLFN_SERVING_WORKERS": "many"})
    with pytest.raises(ConfigurationError, match="serving.max_batch_size"):
        Serving.from_dict({"max_batch_size": 0}, {})


def test_per_thread_interpreters_are_capped_by_the_cpus(tmp_path, rt_models):
    import os

    from mlfn_runtime.serving import available_cpus

    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    d = make_function_dir(tmp_path / "pt", rt_models, serving={"interpreter": "per-thread", "workers": 64})
    runner = load_function(str(d)).default_model.runner
    assert runner.mode == "per-thread" and runner.max_interpreters == min(64, available_cpus())
