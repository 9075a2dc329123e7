"""Hostile input over every route and protocol, generated from a fixed seed.

Valid requests of each protocol are mutated (truncated or garbled bytes, a wrong type at a
random field, huge numbers, NaN/Inf, deep nesting, giant strings within the payload cap,
wrong content types, bad base64, non-image bytes, images whose headers lie, zero-size
images, unknown models/versions, unknown OIP input names and datatypes, odd GET paths) and
sent to the real server in-process. Every answer must be a 4xx `{"error": str}` without heap
addresses or tracebacks, or a 2xx where the input happens to be valid; never a 5xx
(OpenWhisk /run: a 200 application error, never a 502 developer error; web actions: a
statusCode below 500). Afterwards the server still answers a normal prediction."""
from __future__ import annotations

import io
import json
import random
import re
import struct
import zlib

import requests
from PIL import Image

from .conftest import b64, digit_png, running

SEED = 11
HEAP_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
ZEROS_8x8 = [[[0.0]] * 8] * 8


# --------------------------------------------------------------------------- hostile values

def png_with_header(width: int, height: int, body_from=(8, 8)) -> bytes:
    """A PNG whose IHDR claims width x height (valid CRC) over the pixels of a smaller one."""
    buf = io.BytesIO()
    Image.new("L", body_from, 128).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def lying_images(rng: random.Random) -> list:
    png = digit_png([[0.5] * 8] * 8)
    jpeg = digit_png([[0.5] * 8] * 8, "JPEG", size=(64, 64))
    gif = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b"\x2c" + b"\x00" * 9 + b"\x02\x02\x44\x01\x00;"
    bmp = b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 30000, -30000, 1, 24, 0, 16, 0, 0, 0, 0)
    return [
        png_with_header(0, 8), png_with_header(8, 0), png_with_header(50000, 50000), png_with_header(3000, 3000),
        png_with_header(1, 40_000_000), png_with_header(2 ** 31 - 1, 1), png[: rng.randrange(8, len(png))],
        jpeg[: len(jpeg) // 2], jpeg[:2] + bytes(rng.randrange(256) for _ in range(200)), gif, bmp + b"\x00" * 16,
        b"\x89PNG\r\n\x1a\n", b"", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>", b'{"image": "x"}',
    ]


def hostile_value(rng: random.Random, images: list):
    """One value of a wrong type, size or content."""
    choices = [
        lambda: None, lambda: True, lambda: False, lambda: 0, lambda: -1, lambda: 1e308, lambda: -1e308,
        lambda: float("nan"), lambda: float("inf"), lambda: -float("inf"), lambda: 2 ** 70, lambda: -(2 ** 64),
        lambda: "", lambda: "x" * rng.randrange(1, 5000), lambda: "☃\u0000\ud7ff", lambda: [], lambda: {}, lambda: [[]],
        lambda: [[1, 2], [3]], lambda: nested(rng.randrange(30, 200)), lambda: {"b64": 5}, lambda: {"b64": "!!!"},
        lambda: "data:image/png;base64,%%%", lambda: "A" * rng.randrange(200_000, 700_000),
        lambda: [0.0] * rng.randrange(1000, 20000), lambda: b64(rng.choice(images)), lambda: {"b64": b64(rng.choice(images))},
        lambda: "=" * rng.randrange(1, 9), lambda: "QUJD" * rng.randrange(1, 50) + "=", lambda: [b64(rng.choice(images))] * 3,
        lambda: {"nope": 1}, lambda: [[[[float("nan")]] * 8] * 8], lambda: [[[[1e39]] * 8] * 8],
    ]
    return rng.choice(choices)()


def nested(depth: int):
    v: list = [0.0]
    for _ in range(depth):
        v = [v]
    return v


def mutate(rng: random.Random, doc, images: list):
    """`doc` with one randomly chosen field (at any depth) replaced by a hostile value,
    or a key added or removed."""
    doc = json.loads(json.dumps(doc))
    paths = list(_paths(doc, ()))
    path = rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if not path:
        return hostile_value(rng, images)
    what = rng.random()
    if what < 0.1 and isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif what < 0.2 and isinstance(parent, dict):
        parent[rng.choice(["model", "models", "id", "outputs", "parameters", "value", "images", "image"])] = \
            hostile_value(rng, images)
    else:
        parent[path[-1]] = hostile_value(rng, images)
    return doc


def _paths(v, prefix):
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v[:3]):
            yield from _paths(x, prefix + (i,))


def garble(rng: random.Random, data: bytes) -> bytes:
    """Raw byte damage: truncated, bytes flipped, garbage inserted, another encoding."""
    kind = rng.randrange(5)
    if kind == 0:
        return data[: rng.randrange(0, max(1, len(data)))]
    if kind == 1:
        out = bytearray(data)
        for _ in range(rng.randrange(1, 10)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 2:
        at = rng.randrange(len(data) + 1)
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + data[at:]
    if kind == 3:
        return data.decode("utf-8", "replace").encode("utf-16")
    return b"\xef\xbb\xbf" + data  # a BOM


CONTENT_TYPES = ["application/json", "text/plain", "image/png", "application/octet-stream", "",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "image/svg+xml"]


# --------------------------------------------------------------------------- the cases

def valid_bodies(png_b64: str) -> dict:
    """path -> valid JSON requests of that route."""
    v2_tensor = {"name": "pixels", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}
    return {
        "/predict": [{"image": png_b64}, {"images": [png_b64, png_b64]}, {"instances": [[0.0] * 64]},
                     {"inputs": [ZEROS_8x8]}, {"image": {"b64": png_b64}, "model": "digits"}],
        "/v2/models/digits/infer": [
            {"inputs": [v2_tensor], "outputs": [{"name": "output_0"}]},
            {"id": "1", "inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": [png_b64]}]},
            {"inputs": [{**v2_tensor, "datatype": "INT32", "data": [[1] * 64]}], "parameters": {"binary_data_output": True}}],
        "/v1/models/digits:predict": [{"instances": [{"b64": png_b64}]}, {"inputs": [ZEROS_8x8]},
                                      {"instances": [ZEROS_8x8, ZEROS_8x8]}, {"signature_name": "serving_default",
                                                                              "inputs": {"pixels": [ZEROS_8x8]}}],
    }


def generated_cases(rng: random.Random, images: list, png: bytes) -> list:
    """[(kind, path, content type, body bytes)], at least 400, all from `rng`."""
    cases = []
    bodies = valid_bodies(b64(png))
    for path, docs in bodies.items():
        for _ in range(110):
            doc = mutate(rng, rng.choice(docs), images)
            data = json.dumps(doc).encode()
            if rng.random() < 0.25:
                data = garble(rng, data)
            ctype = "application/json" if rng.random() < 0.8 else rng.choice(CONTENT_TYPES)
            cases.append(("http", path, ctype, data))
    for path in ("/predict", "/", "/predict?model=nope", "/predict?model=digits"):
        for img in images:
            cases.append(("http", path, rng.choice(["image/png", "image/jpeg", "application/octet-stream"]), img))
    for path in ("/v2/models/nope/infer", "/v2/models/digits/versions/7/infer", "/v2/models/digits/versions/x/infer",
                 "/v1/models/nope:predict", "/v1/models/digits/versions/2:predict", "/v1/models/digits:classify",
                 "/v2/models/digits/infer/extra", "/v2/models/%00/infer", "/v1/models/digits/versions/1:predict"):
        cases.append(("http", path, "application/json", json.dumps(rng.choice(bodies["/v2/models/digits/infer"]
                                                                              + bodies["/v1/models/digits:predict"])).encode()))
    for path in ("/v2/models/%ff", "/v2/models/digits/versions/99", "/v2/models/digits/versions/99/ready",
                 "/v2/models/nope/ready", "/v1/models/digits/versions/abc/metadata", "/v1/models/nope",
                 "/v2/" + "a" * 5000, "/../../etc/passwd", "/healthz?x=%zz", "/v2/models/digits/infer",
                 "/predict", "/run", "/metrics?name[]=1", "/v2/models//ready", "/v1/models/digits:predict"):
        cases.append(("get", path, "", b""))
    cases += oip_tensor_cases(rng, images)
    cases += binary_oip_cases(rng)
    for _ in range(70):
        value = mutate(rng, rng.choice(bodies["/predict"]), images)
        body = {"value": value, "activation_id": rng.choice(["a", 5, None, ["x"]]), "deadline": rng.choice(["1", 1, {}])}
        if rng.random() < 0.2:
            body = mutate(rng, body, images)
        cases.append(("run", "/run", "application/json", json.dumps(body).encode()))
    for _ in range(70):
        cases.append(("run", "/run", "application/json", json.dumps({"value": web_value(rng, images, png)}).encode()))
    return cases


def oip_tensor_cases(rng: random.Random, images: list) -> list:
    names = ["pixels", "nope", "", "serving_default_pixels:0", "PIXELS", 5]
    datatypes = ["FP32", "FP64", "BOOL", "INT8", "UINT64", "BF16", "fp32", "BYTES", None, 3]
    cases = []
    for _ in range(60):
        shape = rng.choice([[1, 8, 8, 1], [1, 64], [64], [], [0, 8, 8, 1], [-1, 8, 8, 1], [2 ** 40, 2 ** 40, 2 ** 40],
                            [1, 8, 8, 1.5], "1,8,8,1", [2 ** 64]])
        data = rng.choice([[0.0] * 64, [True] * 64, [0.1] * 64, [2 ** 40] * 64, [[0.0] * 8] * 8, [b64(rng.choice(images))],
                           None, "0", [None] * 64, nested(40), [float("nan")] * 64])
        tensor = {"name": rng.choice(names), "shape": shape, "datatype": rng.choice(datatypes), "data": data}
        doc = {"inputs": [tensor] * rng.choice([1, 1, 2])}
        cases.append(("http", "/v2/models/digits/infer", "application/json", json.dumps(doc).encode()))
    return cases


def binary_oip_cases(rng: random.Random) -> list:
    """Triton's binary extension with lying sizes and header lengths."""
    cases = []
    for _ in range(30):
        size = rng.choice([256, 0, 255, 257, -4, 2 ** 40, "256", None])
        head = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 8, 8, 1], "datatype": rng.choice(["FP32", "BYTES", "FP16"]),
                                       "parameters": {"binary_data_size": size}}]}).encode()
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([256, 10, 0, 300])))
        header_len = rng.choice([len(head), len(head) + 5, -1, 0, 10 ** 12, "abc"])
        cases.append(("binary", "/v2/models/digits/infer", str(header_len), head + payload))
    return cases


def web_value(rng: random.Random, images: list, png: bytes) -> dict:
    web = {"__ow_method": rng.choice(["post", "get", 5, None]), "__ow_path": rng.choice(["", "/x", None]),
           "__ow_headers": rng.choice([{"content-type": "image/png"}, {"content-type": "application/json"}, {},
                                       ["content-type"], "x", None, {"content-type": 5}]),
           "__ow_query": rng.choice(["", "model=nope", "model=digits&x=%ZZ", 7, None]),
           "__ow_body": rng.choice([b64(png), b64(rng.choice(images)), "{not json", "[" * 300, "", None, 5, {"image": 5},
                                    b64(b'{"image": 7}'), "!!!", "A" * 300_000])}
    if rng.random() < 0.3:
        web["image"] = hostile_value(rng, images)
    return web


# --------------------------------------------------------------------------- the test

def send(session, url, case):
    kind, path, ctype, data = case
    headers = {"Content-Type": ctype} if kind != "binary" else {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": ctype}
    if kind == "get":
        return session.get(url + path, timeout=30)
    return session.post(url + path, data=data, headers=headers, timeout=30)


def problem(case, r) -> str:
    """What is wrong with answer `r` to `case` ("" when nothing)."""
    kind = case[0]
    if r.status_code >= 500:
        return f"HTTP {r.status_code}"
    if r.status_code == 200 and ("Inference-Header-Content-Length" in r.headers or case[1].startswith("/metrics")):
        return ""  # Triton's binary outputs (asked for by binary_data_output), Prometheus text
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code} answered no JSON: {r.text[:100]!r}"
    if kind == "run" and isinstance(body, dict) and "statusCode" in body:  # a web action
        if not isinstance(body["statusCode"], int) or body["statusCode"] >= 500:
            return f"web action statusCode {body['statusCode']}"
        body = body.get("body")
        status = r.json()["statusCode"]
    else:
        status = 400 if kind == "run" and isinstance(body, dict) and "error" in body else r.status_code
    if status >= 400:
        if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
            return f"HTTP {status} without an error sentence: {str(body)[:100]!r}"
        if HEAP_ADDRESS.search(body["error"]) or "Traceback" in body["error"]:
            return f"error shows internals: {body['error'][:200]!r}"
    return ""


def test_hostile_bodies_get_4xx_and_the_server_keeps_serving(digits_dir, digits, capfd):
    x, y = digits
    rng = random.Random(SEED)
    png = digit_png(x[0])
    images = lying_images(rng)
    cases = generated_cases(rng, images, png)
    assert len(cases) >= 400
    with running(digits_dir) as (url, _):
        s = requests.Session()
        assert s.post(url + "/init", json={"value": {"name": "digits", "main": "main", "binary": False}}).status_code == 200
        problems, statuses = [], {}
        for case in cases:
            r = send(s, url, case)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            wrong = problem(case, r)
            if wrong:
                problems.append(f"{wrong} for {case[0]} {case[1]} {case[2]!r} {case[3][:120]!r}")
        assert not problems, f"{len(problems)} of {len(cases)} answers are wrong:\n" + "\n".join(problems[:15])
        assert sum(n for status, n in statuses.items() if 400 <= status < 500) > len(cases) // 3  # mostly refused
        r = requests.post(url + "/predict", json={"image": b64(png)}, timeout=10)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(y[0])
    assert "Traceback" not in capfd.readouterr().err


def test_the_generated_cases_are_the_same_every_run():
    rng1, rng2 = random.Random(SEED), random.Random(SEED)
    png = b"\x89PNG"
    one = generated_cases(rng1, lying_images(rng1), png)
    two = generated_cases(rng2, lying_images(rng2), png)
    assert [c[3] for c in one] == [c[3] for c in two]
