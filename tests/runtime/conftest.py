"""Fixtures for the runtime tests: tiny .tflite models (built once per session in a
TensorFlow subprocess), function folders, and the server running in-process."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent

DIGITS_PRE = [{"decode_image": {}}, {"convert": {"mode": "L"}}, {"resize": {"width": 8, "height": 8}},
              {"scale": {"factor": 0.00392156862745098}}]
DIGITS_POST = [{"softmax": {}}, {"top_k": {"k": 3}}]


@pytest.fixture(autouse=True)
def _restore_environ():
    """The OpenWhisk /init exports `value.env` into os.environ, as an action container
    must; in-process that would leak into other tests (e.g. __OW_API_HOST), so every
    runtime test gets the environment back as it found it."""
    saved = dict(os.environ)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


INIT_TOKEN = "test-init-token-0123456789"


@pytest.fixture
def code_actions(monkeypatch) -> dict:
    """Code actions opted in (serving.code_actions + an init token in the server's
    environment); returns the /init env entry that carries the token."""
    monkeypatch.setenv("MLFN_SERVING_CODE_ACTIONS", "1")
    monkeypatch.setenv("MLFN_INIT_TOKEN", INIT_TOKEN)
    return {"MLFN_INIT_TOKEN": INIT_TOKEN}


@pytest.fixture(scope="session")
def rt_models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rt_models")
    subprocess.run([sys.executable, str(HERE / "make_models.py"), str(out)], check=True,
                   capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def digits(rt_models):
    d = np.load(rt_models / "digits.npz")
    return d["x"], d["y"]


def digit_png(x8: np.ndarray, fmt: str = "PNG", size=None) -> bytes:
    """A digits sample as an image file: pixel = round(x*255) (x already 0..1)."""
    from PIL import Image

    img = Image.fromarray(np.rint(np.asarray(x8) * 255).astype(np.uint8), "L")
    if size:
        img = img.resize(size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_function_dir(root: Path, rt_models: Path, models=None, serving=None, files=None, name="digits") -> Path:
    """A function folder like the one `mlfn build` lays out in the image."""
    root.mkdir(parents=True, exist_ok=True)
    models = models or [{"name": "digits", "file": "digits_int8.tflite", "quantization": "int8",
                         "pre": DIGITS_PRE, "post": DIGITS_POST}]
    spec_models = []
    for m in models:
        m = dict(m)
        src = m.pop("file")
        dest = root / "models" / m["name"] / "model.tflite"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rt_models / src, dest)
        spec_models.append({"path": f"models/{m['name']}/model.tflite", **m})
    (root / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    for rel, text in (files or {}).items():
        (root / rel).write_text(text)
    spec = {"name": name, "runtime": "litert", "models": spec_models,
            "serving": {"max_batch_size": 32, "max_payload_bytes": 1048576, "interpreter": "lock",
                        "num_threads": 1, "workers": 4, **(serving or {})}}
    (root / "function.json").write_text(json.dumps(spec, indent=2))
    return root


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory, rt_models) -> Path:
    return make_function_dir(tmp_path_factory.mktemp("fn") / "digits", rt_models)


@contextlib.contextmanager
def running(function_dir=None, function=None):
    """The real server (make_server) on an ephemeral port in a thread; yields its base URL."""
    from mlfn_runtime import make_server

    srv = make_server(str(function_dir) if function_dir else None, "127.0.0.1", 0, function=function)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.port}", srv
    finally:
        srv.shutdown()
        srv.drain()
        srv.server_close()
        t.join(5)


@pytest.fixture(scope="module")
def digits_server(digits_dir):
    with running(digits_dir) as (url, srv):
        yield url
