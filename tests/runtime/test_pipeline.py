"""One test per pipeline step, plus validation messages."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from mlfn_runtime.errors import CustomStepError, InvalidInput
from mlfn_runtime.pipeline import Pipeline, validate_steps


def png(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(w=4, h=2):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = 200  # red
    a[..., 2] = np.arange(w, dtype=np.uint8)[None, :] * 10
    return Image.fromarray(a, "RGB")


# ---------------------------------------------------------------- pre steps

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_decode_image_any_pillow_format_from_base64_and_bytes(fmt):
    data = png(rgb(8, 8), fmt)
    pipe = Pipeline(["decode_image"], stage="pre")
    for raw in (data, base64.b64encode(data).decode(), {"b64": base64.b64encode(data).decode()}):
        x = pipe(raw)
        assert x.shape[:2] == (8, 8) and x.dtype == np.float32


def test_decode_image_rejects_garbage_and_bad_base64():
    pipe = Pipeline(["decode_image"], stage="pre")
    with pytest.raises(InvalidInput, match="^is not an image: 23 bytes of text starting .definitely not an image.$"):
        pipe(b"definitely not an image")
    with pytest.raises(InvalidInput, match="not valid base64"):
        pipe("@@@###")
    with pytest.raises(InvalidInput, match="expected an encoded image"):
        pipe([1, 2, 3])


def test_decode_image_data_url_and_urlsafe_base64():
    data = png(rgb())
    pipe = Pipeline(["decode_image"], stage="pre")
    assert pipe("data:image/png;base64," + base64.b64encode(data).decode()).shape == (2, 4, 3)
    assert pipe(base64.urlsafe_b64encode(data).decode().rstrip("=")).shape == (2, 4, 3)


def test_exif_transpose_rotates_by_orientation_tag():
    img = rgb(4, 2)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = png(img, "JPEG", exif=exif.tobytes())
    assert Pipeline(["decode_image"], stage="pre")(data).shape[:2] == (2, 4)
    assert Pipeline(["decode_image", "exif_transpose"], stage="pre")(data).shape[:2] == (4, 2)


def test_convert_mode_and_transparent_background_is_white():
    x = Pipeline(["decode_image", {"convert": {"mode": "L"}}], stage="pre")(png(rgb()))
    assert x.shape == (2, 4, 1)
    transparent = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    x = Pipeline(["decode_image", {"convert": {"mode": "RGB"}}], stage="pre")(png(transparent))
    assert x.shape == (2, 2, 3) and np.all(x == 255)


@pytest.mark.parametrize("method", ["bilinear", "nearest", "bicubic", "lanczos", "area"])
def test_resize_methods(method):
    x = Pipeline(["decode_image", {"resize": {"width": 5, "height": 3, "method": method}}], stage="pre")(png(rgb(10, 6)))
    assert x.shape == (3, 5, 3)


def test_resize_keep_aspect_pad_and_crop():
    img = Image.new("L", (8, 4), 255)
    pad = Pipeline(["decode_image", {"resize": {"width": 8, "height": 8, "keep_aspect": "pad", "pad_value": 7}}],
                   stage="pre")(png(img))
    assert pad.shape == (8, 8, 1)
    assert pad[0, 0, 0] == 7 and pad[4, 4, 0] == 255  # letterbox bands top/bottom, image in the middle
    img = Image.new("L", (8, 4), 0)
    img.paste(255, (2, 0, 6, 4))  # white center square
    crop = Pipeline(["decode_image", {"resize": {"width": 4, "height": 4, "keep_aspect": "crop"}}], stage="pre")(png(img))
    assert crop.shape == (4, 4, 1) and np.all(crop == 255)  # only the center survives
    rgbpad = Pipeline(["decode_image", {"resize": {"width": 4, "height": 4, "keep_aspect": "pad",
                                                    "pad_value": [1, 2, 3]}}], stage="pre")(png(rgb(4, 2)))
    assert rgbpad[0, 0].tolist() == [1, 2, 3]


def test_resize_large_jpeg_uses_draft_and_still_gets_exact_size():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8), "RGB")
    x = Pipeline(["decode_image", {"resize": {"width": 32, "height": 24}}], stage="pre")(png(big, "JPEG"))
    assert x.shape == (24, 32, 3)


def test_to_array_is_float32_hwc():
    x = Pipeline(["decode_image", "to_array"], stage="pre")(png(Image.new("L", (3, 2), 9)))
    assert x.dtype == np.float32 and x.shape == (2, 3, 1) and np.all(x == 9)


def test_scale_factor_and_offset():
    x = Pipeline([{"scale": {"factor": 2, "offset": -1}}], stage="pre")(np.array([0.0, 0.5, 1.0]))
    assert x.tolist() == [-1.0, 0.0, 1.0] and x.dtype == np.float32


def test_to_array_implied_before_array_steps():
    x = Pipeline(["decode_image", {"convert": {"mode": "L"}}, {"scale": {"factor": 0.00392156862745098}}],
                 stage="pre")(png(Image.new("L", (2, 2), 255)))
    assert np.allclose(x, 1.0) and x.shape == (2, 2, 1)


def test_normalize_per_channel_and_after_nchw():
    x = np.ones((2, 2, 3), np.float32) * np.array([1, 2, 3], np.float32)
    y = Pipeline([{"normalize": {"mean": [1, 2, 3], "std": [1, 2, 4]}}], stage="pre")(x)
    assert np.allclose(y, 0)
    y = Pipeline([{"layout": {"to": "nchw"}}, {"normalize": {"mean": [0, 0, 3], "std": [1, 2, 3]}}], stage="pre")(x)
    assert y.shape == (3, 2, 2) and np.allclose(y[0], 1) and np.allclose(y[1], 1) and np.allclose(y[2], 0)
    with pytest.raises(InvalidInput, match="3 mean/std values but the input has 1 channels"):
        Pipeline([{"normalize": {"mean": [1, 2, 3], "std": [1, 1, 1]}}], stage="pre")(np.ones((2, 2, 1)))


def test_channel_order_bgr():
    x = np.array([[[1, 2, 3]]], np.float32)
    assert Pipeline([{"channel_order": {"order": "bgr"}}], stage="pre")(x).tolist() == [[[3, 2, 1]]]
    assert Pipeline([{"channel_order": {"order": "rgb"}}], stage="pre")(x).tolist() == [[[1, 2, 3]]]


def test_layout_nchw_and_back():
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    y = Pipeline([{"layout": {"to": "nchw"}}], stage="pre")(x)
    assert y.shape == (3, 2, 2) and y[1, 0, 1] == x[0, 1, 1]
    z = Pipeline([{"layout": {"to": "nchw"}}, {"layout": {"to": "nhwc"}}], stage="pre")(x)
    assert np.array_equal(z, x)


def test_cast_rounds_and_clips_to_integer_types():
    y = Pipeline([{"cast": {"dtype": "uint8"}}], stage="pre")(np.array([-3.0, 1.6, 300.0]))
    assert y.dtype == np.uint8 and y.tolist() == [0, 2, 255]
    assert Pipeline([{"cast": {"dtype": "float16"}}], stage="pre")(np.ones(2)).dtype == np.float16


def test_custom_pre_step_and_error_with_file_and_line(tmp_path):
    (tmp_path / "pre.py").write_text(
        "import numpy as np\n"
        "def double(x):\n"
        "    return np.asarray(x) * 2\n"
        "def broken(x):\n"
        "    return 1 / 0\n"
        "def reject(x):\n"
        "    raise ValueError('too dark')\n"
    )
    pipe = Pipeline([{"custom": {"file": "pre.py", "function": "double"}}], base_dir=tmp_path, stage="pre")
    assert pipe(np.ones(2)).tolist() == [2, 2]
    pipe = Pipeline([{"custom": {"file": "pre.py", "function": "broken"}}], base_dir=tmp_path, stage="pre")
    with pytest.raises(CustomStepError, match=r"pre.py, line 5\) raised ZeroDivisionError") as e:
        pipe(np.ones(2))
    assert e.value.status == 500
    pipe = Pipeline([{"custom": {"file": "pre.py", "function": "reject"}}], base_dir=tmp_path, stage="pre")
    with pytest.raises(CustomStepError, match="line 7.*too dark") as e:
        pipe(np.ones(2))
    assert e.value.status == 400
    with pytest.raises(ValueError, match="has no function 'nope'"):
        Pipeline([{"custom": {"file": "pre.py", "function": "nope"}}], base_dir=tmp_path, stage="pre")
    with pytest.raises(ValueError, match="'missing.py' does not exist"):
        Pipeline([{"custom": {"file": "missing.py", "function": "f"}}], base_dir=tmp_path, stage="pre")
    (tmp_path / "bad.py").write_text("x = 1\ndef f(:\n")
    with pytest.raises(ValueError, match="bad.py', line 2 failed to import: SyntaxError"):
        Pipeline([{"custom": {"file": "bad.py", "function": "f"}}], base_dir=tmp_path, stage="pre")


# ---------------------------------------------------------------- post steps

def test_softmax():
    y = Pipeline(["softmax"], stage="post")(np.array([1.0, 1.0, 1000.0]))
    assert np.isclose(y.sum(), 1) and y.argmax() == 2 and np.all(np.isfinite(y))


def test_sigmoid():
    y = Pipeline(["sigmoid"], stage="post")(np.array([0.0, 100.0, -100.0]))
    assert np.allclose(y, [0.5, 1.0, 0.0])


def test_argmax_with_labels(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n\n")
    out = Pipeline(["argmax"], base_dir=tmp_path, stage="post", labels="labels.txt")(np.array([0.1, 0.7, 0.2]))
    assert out == {"label": "dog", "index": 1, "score": pytest.approx(0.7)}


def test_top_k_with_labels_file_and_without(tmp_path):
    (tmp_path / "l.txt").write_text("a\nb\nc\nd\n")
    scores = np.array([0.1, 0.4, 0.3, 0.2])
    out = Pipeline([{"top_k": {"k": 2, "labels": "l.txt"}}], base_dir=tmp_path, stage="post")(scores)
    assert out["label"] == "b" and out["index"] == 1
    assert [t["label"] for t in out["top_k"]] == ["b", "c"]
    out = Pipeline([{"top_k": {"k": 10}}], stage="post")(scores)
    assert [t["index"] for t in out["top_k"]] == [1, 2, 3, 0] and out["label"] == "1"
    with pytest.raises(ValueError, match="labels file 'nope.txt' cannot be read"):
        Pipeline([{"top_k": {"labels": "nope.txt"}}], base_dir=tmp_path, stage="post")


def test_threshold_binary_multilabel_and_after_top_k():
    assert Pipeline([{"threshold": {"value": 0.5}}], stage="post")(np.array([0.7])) == {"score": pytest.approx(0.7), "positive": True}
    out = Pipeline([{"threshold": {"value": 0.3}}], stage="post")(np.array([0.2, 0.9, 0.4]))
    assert [p["index"] for p in out["positive"]] == [1, 2]
    out = Pipeline([{"top_k": {"k": 3}}, {"threshold": {"value": 0.35}}], stage="post")(np.array([0.2, 0.9, 0.4]))
    assert [t["index"] for t in out["top_k"]] == [1, 2] and out["label"] == "1"
    out = Pipeline(["argmax", {"threshold": {"value": 0.95}}], stage="post")(np.array([0.2, 0.9, 0.4]))
    assert out["label"] is None


def test_identity():
    x = np.array([1.0, 2.0])
    assert Pipeline(["identity"], stage="post")(x) is x


def test_custom_post_step(tmp_path):
    (tmp_path / "post.py").write_text("def best(y):\n    return {'best': int(y.argmax())}\n")
    out = Pipeline([{"custom": {"file": "post.py", "function": "best"}}], base_dir=tmp_path, stage="post")(np.array([0, 3, 1]))
    assert out == {"best": 1}


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("steps,stage,message", [
    ([{"resize": {"width": 8}}], "pre", "pre step 1 'resize': parameter 'height' is required"),
    ([{"resize": {"width": -1, "height": 2}}], "pre", "parameter 'width' must be a positive integer, not -1"),
    ([{"resize": {"width": 1, "height": 2, "method": "magic"}}], "pre", "'method' must be one of bilinear"),
    (["decode_image", {"frobnicate": {}}], "pre", "pre step 2 'frobnicate' is unknown"),
    (["softmax"], "pre", "pre step 1 'softmax' is a post-processing step"),
    ([{"top_k": {"k": 0}}], "post", "post step 1 'top_k': parameter 'k' must be a positive integer"),
    ([{"convert": {"mode": "XYZ"}}], "pre", "parameter 'mode' must be one of"),
    ([{"scale": {"factr": 2}}], "pre", "unknown parameter 'factr'"),
    ([{"normalize": {"mean": [1], "std": [0]}}], "pre", "parameter 'std' must be a non-zero"),
    ([{"custom": {"file": "pre.txt", "function": "f"}}], None, "parameter 'file' must be a Python file"),
    ([{"a": 1, "b": 2}], "post", "post step 1 must be a step name or a one-key mapping"),
    ("softmax", "post", "must be a list of steps"),
])
def test_validate_steps_names_step_and_param(steps, stage, message):
    with pytest.raises(ValueError) as e:
        validate_steps(steps, stage)
    assert message in str(e.value)


def test_validate_steps_accepts_the_digits_pipeline():
    validate_steps([{"decode_image": {}}, {"convert": {"mode": "L"}}, {"resize": {"width": 8, "height": 8}},
                    {"scale": {"factor": 0.00392156862745098}}], "pre")
    validate_steps(["softmax", {"top_k": {"k": 3}}], "post")
    validate_steps([{"resize": {"width": 2, "height": 2, "keep_aspect": False}}], "pre")


def test_decode_image_refuses_decompression_bombs_before_decoding(monkeypatch):
    monkeypatch.setenv("MLFN_MAX_IMAGE_PIXELS", "10000")
    data = png(Image.new("L", (200, 200)))
    with pytest.raises(InvalidInput, match="image is 200x200 pixels; at most 10000"):
        Pipeline(["decode_image"], stage="pre")(data)
    # a large JPEG is checked after DCT scaling (draft), so it still decodes when a resize follows
    big = png(Image.new("RGB", (400, 400)), "JPEG")
    x = Pipeline(["decode_image", {"resize": {"width": 8, "height": 8}}], stage="pre")(big)
    assert x.shape == (8, 8, 3)


@pytest.mark.parametrize("value", [None, 5, ["aGk="], {"b64": "aGk="}])
def test_decode_image_b64_that_is_not_text_is_invalid_input(value):
    """{"b64": <not a string>} is the client's mistake (400), not an AttributeError (500)."""
    with pytest.raises(InvalidInput, match="'b64' must be base64 text"):
        Pipeline(["decode_image"], stage="pre")({"b64": value})


@pytest.mark.parametrize("classes", [10, 256, 257, 1000])
def test_top_k_orders_by_score_below_and_above_the_python_sort_limit(classes):
    scores = np.random.default_rng(classes).permutation(classes).astype(np.float32) / classes
    out = Pipeline([{"top_k": {"k": 5}}], stage="post")(scores[None, :])
    expected = np.argsort(-scores, kind="stable")[:5].tolist()
    assert [t["index"] for t in out["top_k"]] == expected
    assert [t["score"] for t in out["top_k"]] == [float(scores[i]) for i in expected]
