"""The REAL digits image built with serving.grpc on, in Docker with a read-only root
filesystem: tritonclient.grpc (health, metadata, raw/typed/BYTES infer, batch, every error),
tritonclient.http and REST over h2c (curl) against the same container and port; its size."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from tests.runtime.test_image_protocols import Container

from .grpc_helpers import check_errors, check_health_metadata_infer

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def grpc_image(base_image, digits_project):
    from mlfn.config import load_config
    from mlfn.image import build_image

    cfg = load_config(str(digits_project)).override({"serving.grpc": True})
    return build_image(cfg, builder="docker")


@pytest.fixture(scope="module")
def grpc_container(grpc_image):
    c = Container(grpc_image.image)
    yield c
    c.remove()


@pytest.fixture(scope="module")
def samples(validation_digits):
    return validation_digits


def test_grpc_and_http_clients_on_one_port_of_the_real_image(grpc_container, samples):
    import tritonclient.http as httpclient

    target = grpc_container.url.removeprefix("http://")
    x, y = samples
    check_health_metadata_infer(target, x, y)
    check_errors(target, 1048576)
    client = httpclient.InferenceServerClient(target)  # HTTP/1.1, same container and port
    meta = client.get_model_metadata("digits")
    inp = httpclient.InferInput(meta["inputs"][0]["name"], [4] + [int(d) for d in meta["inputs"][0]["shape"][1:]], "FP32")
    inp.set_data_from_numpy(x[:4].reshape(inp.shape()).astype(np.float32))
    logits = client.infer("digits", [inp]).as_numpy(meta["outputs"][0]["name"])
    assert (logits.argmax(1) == y[:4]).mean() >= 0.75


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_rest_over_h2c_in_the_real_image(grpc_container):
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
                        grpc_container.url + "/v2/models/digits/ready"], capture_output=True, text=True, timeout=30)
    assert r.stdout.endswith("\n2 200") and '"ready":true' in r.stdout


def test_grpc_grows_the_image_by_at_most_25_mb_and_only_when_on(grpc_image, digits_image, digits_project):
    from mlfn.config import load_config
    from mlfn.image.deps import requirements_for

    grown = grpc_image.size_bytes - digits_image.size_bytes
    assert 0 < grown <= 25 * 1024 * 1024, grown
    cfg = load_config(str(digits_project))
    names = lambda c: {r.split("==")[0].lower() for r in requirements_for(c)}  # noqa: E731
    assert not names(cfg) & {"h2", "protobuf", "hpack", "hyperframe"}
    assert names(cfg.override({"serving.grpc": True})) - names(cfg) == {"h2", "protobuf", "hpack", "hyperframe"}
