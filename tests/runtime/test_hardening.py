"""Issue 11's findings, one test each: decoded-image memory budget (413 before decoding),
JSON nesting (400, not a RecursionError), /run before /init (403), no heap addresses."""
from __future__ import annotations

import io
import json
import threading

import pytest
import requests
from PIL import Image, ImageFile

from mlfn_runtime.errors import PayloadTooLarge
from mlfn_runtime.function import load_function
from mlfn_runtime.memory_budget import MIB, MemoryBudget, memory_limit_bytes

from .conftest import b64, digit_png, running


def png(mode: str, side: int) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), (200,) * len(mode)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fn_64mib(digits_dir):
    return load_function(str(digits_dir), memory=MemoryBudget(64 * MIB, 256 * MIB))


def test_an_image_that_cannot_fit_the_budget_is_413_before_decoding(fn_64mib, monkeypatch):
    body = {"image": b64(png("RGBA", 4000))}  # 71 KB on the wire, 61 MiB decoded
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with pytest.raises(PayloadTooLarge, match=r"^'image' \(4000x4000 RGBA\) needs about \d+ MiB to decode, more than "
                                              r"the 64 MiB this function has for images \(memory limit 256 MiB\)"):
        fn_64mib.predict(body)
    assert decoded == []  # refused from the header alone
    assert fn_64mib.memory.in_use == 0


def test_images_within_the_budget_decode_and_release_it(fn_64mib, digits):
    x, y = digits
    out = fn_64mib.predict({"images": [b64(png("RGB", 1500)), b64(digit_png(x[0]))]})  # ~12 MiB peak
    assert len(out["predictions"]) == 2 and out["predictions"][1]["label"] == str(y[0])
    assert fn_64mib.memory.in_use == 0


def test_concurrent_images_share_the_budget(digits_dir):
    budget = MemoryBudget(30 * MIB)
    fn = load_function(str(digits_dir), memory=budget)
    peak = []
    real_load = ImageFile.ImageFile.load

    def load(self):  # slow decoding: the requests overlap, and we see what is reserved
        peak.append(budget.in_use)
        threading.Event().wait(0.1)
        return real_load(self)

    body = {"image": b64(png("RGB", 1500))}  # ~12 MiB peak: two fit at once, not three
    results = []
    ImageFile.ImageFile.load = load
    try:
        threads = [threading.Thread(target=lambda: results.append(fn.predict(body))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        ImageFile.ImageFile.load = real_load
    assert len(results) == 4  # the others waited for memory, none was refused
    assert 20 * MIB < max(peak) <= 30 * MIB and budget.in_use == 0  # two at once, never three


def test_memory_limit_from_env_and_cgroup(tmp_path):
    v2 = tmp_path / "memory.max"
    v2.write_text("268435456\n")
    assert memory_limit_bytes({}, (str(v2),)) == 256 * MIB
    v2.write_text("max\n")
    assert memory_limit_bytes({}, (str(v2),)) is None
    v1 = tmp_path / "memory.limit_in_bytes"
    v1.write_text("9223372036854771712\n")
    assert memory_limit_bytes({}, (str(tmp_path / "absent"), str(v1))) is None
    assert memory_limit_bytes({"MLFN_MEMORY_MB": "300"}, (str(v2),)) == 300 * MIB


def test_the_budget_is_the_limit_minus_what_the_process_holds_and_request_bodies(monkeypatch):
    from mlfn_runtime.memory_budget import resident_bytes
    from mlfn_runtime.serving import Serving

    limit_mb = (resident_bytes() >> 20) + 256  # 256 MiB more than this process holds
    monkeypatch.setenv("MLFN_MEMORY_MB", str(limit_mb))
    budget = MemoryBudget.for_this_process(Serving(max_payload_bytes=MIB, workers=8))
    assert budget.limit == limit_mb * MIB
    assert 190 * MIB < budget.capacity <= (256 + 1 - 24 - 32) * MIB  # minus slack and 8 x 4 x 1 MiB of bodies
    huge_bodies = MemoryBudget.for_this_process(Serving(max_payload_bytes=64 * MIB, workers=8))
    assert 120 * MIB < huge_bodies.capacity <= 129 * MIB  # half of what is free, not nothing


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                  b'{"inputs":' + b"[" * 70 + b"1" + b"]" * 70 + b"}"])
def test_deep_json_is_400_without_a_traceback(digits_server, body, capfd):
    for path in ("/predict", "/v2/models/digits/infer", "/v1/models/digits:predict"):
        r = requests.post(digits_server + path, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 400, (path, r.text)
        assert "levels deep; at most 64 are accepted" in r.json()["error"]
    assert "Traceback" not in capfd.readouterr().err


def test_deep_json_in_a_web_action_body_is_400(digits_dir):
    with running(digits_dir) as (url, _):
        assert requests.post(url + "/init", json={"value": {}}).status_code == 200
        web = {"__ow_method": "post", "__ow_headers": {"content-type": "application/json"},
               "__ow_body": "[" * 5000 + "]" * 5000}
        r = requests.post(url + "/run", json={"value": web})
        assert r.json()["statusCode"] == 400 and "'__ow_body' nests JSON 5000 levels" in r.json()["body"]["error"]


def test_json_brackets_inside_strings_do_not_count(digits_server, digits):
    x, _ = digits
    r = requests.post(digits_server + "/predict", json={"image": b64(digit_png(x[0])), "note": "[{" * 100 + '"'})
    assert r.status_code == 200, r.text


def test_run_before_init_is_refused_as_openwhisk_runtimes_do(digits_dir, digits):
    x, y = digits
    with running(digits_dir) as (url, _):
        body = {"value": {"image": b64(digit_png(x[0]))}, "activation_id": "a"}
        r = requests.post(url + "/run", json=body)
        assert r.status_code == 403 and r.json() == {"error": "The action is not initialized; POST /init before /run."}
        assert requests.post(url + "/init", json={"value": {"name": "d", "main": "main", "binary": False}}).status_code == 200
        r = requests.post(url + "/run", json=body)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(y[0])


@pytest.mark.parametrize("sent,described", [
    (b"", "it is empty (0 bytes)"),
    (b'{"image": "..."}', "16 bytes of text starting '{\"image\": \"...\"}'"),
    (b"\x00\x01\x02\xffjunk", "8 bytes starting 00 01 02 ff 6a 75 6e 6b, which no image format Pillow reads matches"),
])
def test_a_non_image_is_described_not_shown_as_a_heap_address(digits_server, sent, described):
    r = requests.post(digits_server + "/predict", data=json.dumps({"image": b64(sent)}))
    error = r.json()["error"]
    assert r.status_code == 400 and error == f"'image': is not an image: {described}"
    assert "0x" not in error


def v2_infer(url, tensor):
    return requests.post(url + "/v2/models/digits/infer", json={"inputs": [tensor]}, timeout=10)


@pytest.mark.parametrize("name,datatype,data,message", [
    ("nope", "FP32", [0.0] * 64, "model 'digits' has no input 'nope' (inputs: pixels)"),
    ("pixels", "BOOL", [True] * 64,
     "'pixels' is BOOL but input 'pixels' of model 'digits' takes FP32; booleans and numbers do not convert"),
    ("pixels", "FP64", [0.1] * 64,
     "'pixels' is FP64 but input 'pixels' of model 'digits' takes FP32, and 64 of its values (e.g. 0.1) do not convert exactly"),
    ("pixels", "INT32", [2 ** 24 + 1] + [0] * 63,
     "'pixels' is INT32 but input 'pixels' of model 'digits' takes FP32, and 1 of its values (e.g. 16777217) do not"),
])
def test_oip_refuses_unknown_inputs_and_lossy_datatypes(digits_server, name, datatype, data, message):
    r = v2_infer(digits_server, {"name": name, "shape": [1, 8, 8, 1], "datatype": datatype, "data": data})
    assert r.status_code == 400 and message in r.json()["error"], r.text


@pytest.mark.parametrize("datatype,data", [("FP32", [0.1] * 64), ("FP64", [0.5] * 64), ("INT32", [255] * 64),
                                           ("UINT8", [7] * 64), ("FP16", [0.25] * 64)])
def test_oip_accepts_the_model_datatype_and_exact_conversions(digits_server, datatype, data):
    r = v2_infer(digits_server, {"name": "pixels", "shape": [1, 8, 8, 1], "datatype": datatype, "data": data})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 10]


def test_raw_tflite_input_names_are_accepted(digits_dir):
    fn = load_function(str(digits_dir))
    (raw,) = fn.default_model.runner.aliases.keys() & {t for t in fn.default_model.runner.aliases if "pixels" in t}
    out = fn.infer("digits", {raw: [[[[0.0]] * 8] * 8]})
    assert out["output_0"].shape == (1, 10)


def test_json_booleans_are_not_pixels(digits_server):
    r = requests.post(digits_server + "/predict", json={"inputs": [[[[True]] * 8] * 8]}, timeout=10)
    assert r.status_code == 400 and "is BOOL but input 'pixels' of model 'digits' takes FP32" in r.json()["error"]


def test_json_numbers_beyond_fp32_are_400_not_infinity(digits_server):
    r = requests.post(digits_server + "/predict", json={"inputs": [[[[1e39]] * 8] * 8]}, timeout=10)
    assert r.status_code == 400 and "'inputs' holds numbers beyond the range of FP32" in r.json()["error"]


def test_a_huge_shrink_is_box_reduced_first(digits_dir):
    """A 73-byte PNG claiming 1 x 40,000,000 pixels took 5 s of CPU in resize."""
    from .test_hostile_inputs import png_with_header

    fn = load_function(str(digits_dir), memory=MemoryBudget(None))
    resize = fn.default_model.pre.steps[2]
    assert resize.reduction((1, 40_000_000), "L") == (1, 1_250_000)
    assert resize.reduction((64, 64), "L") == (1, 1)  # 8x: resampled directly, as before
    out = fn.predict({"image": b64(png_with_header(1, 40_000_000))})
    assert len(out["predictions"]) == 1
