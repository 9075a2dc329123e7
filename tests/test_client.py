"""`mlfn invoke URL`: what the client sends, against the real function server in a thread."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.client import InvokeError, build_payload, invoke_url
from tests.model.small_models import small_models  # noqa: F401  (fixture)


@contextlib.contextmanager
def _serving(function_dir):
    from mlfn_runtime import make_server

    srv = make_server(str(function_dir), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        srv.shutdown()
        srv.drain()  # close idle keep-alive connections
        srv.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def url(small_models, tmp_path_factory):
    """A function with the two-input model `two` (a: 4, b: 3) and the regression model `reg` (7)."""
    from mlfn.config import load_config
    from mlfn.image import stage_function

    project = tmp_path_factory.mktemp("client")
    (project / "mlfn.yaml").write_text(yaml.safe_dump({
        "name": "two", "model": {"path": str(small_models / "two.keras")}, "quantize": {"mode": "none"},
        "pipeline": {"post": ["identity"]},
        "models": [{"name": "reg", "path": str(small_models / "reg.keras")}]}))
    folder = stage_function(load_config(str(project)), project / "fn")
    with _serving(folder) as base:
        yield base


A, B = [[0.1, 0.2, 0.3, 0.4]], [[1.0, 0.5, 0.25]]


def _predict(url, body):
    return np.asarray(invoke_url(url, build_payload(json_input=body, model="two"))["result"]["predictions"])


@pytest.mark.parametrize("body", [
    '{"instances": [{"a": [0.1, 0.2, 0.3, 0.4], "b": [1.0, 0.5, 0.25]}]}',
    '{"inputs": {"a": [[0.1, 0.2, 0.3, 0.4]], "b": [[1.0, 0.5, 0.25]]}}',
])
def test_v2_converts_instances_and_named_inputs_like_the_other_protocols(url, body):
    expected = _predict(url, '{"inputs": {"a": %s, "b": %s}}' % (A, B))
    got = invoke_url(url, build_payload(json_input=body, model="two"), protocol="v2")["result"]
    (out,) = got["outputs"]
    assert out["shape"] == [1, 2]
    assert np.allclose(np.asarray(out["data"]).reshape(1, 2), expected, atol=1e-6)


def test_v2_names_an_input_the_model_does_not_have(url):
    with pytest.raises(InvokeError, match=r"names input 'c', but model 'two' takes: a, b"):
        invoke_url(url, build_payload(json_input='{"inputs": {"a": [[1,2,3,4]], "c": [[1,2,3]]}}', model="two"),
                   protocol="v2")


def test_nan_is_sent_as_written_and_the_server_400_is_shown(url):
    body = '{"inputs": [[NaN, 1, 2, 3, 4, 5, 6]]}'
    with pytest.raises(InvokeError, match=r"HTTP 400: .*NaN"):
        invoke_url(url, build_payload(json_input=body, model="reg"))
    r = CliRunner().invoke(main, ["invoke", url, "--model", "reg", "--json", body])
    assert r.exit_code != 0 and "HTTP 400" in r.output and "Traceback" not in r.output


def test_a_file_that_is_not_an_image_is_refused_before_sending(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InvokeError, match=r"--image .*notes.txt is not an image"):
        build_payload(images=(str(notes),))


def test_nan_for_a_deployed_function_is_refused_in_one_sentence():
    r = CliRunner().invoke(main, ["invoke", "digits@canary", "--json", '{"inputs": [[NaN, 1]]}'])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "--json holds NaN or Infinity" in r.output
