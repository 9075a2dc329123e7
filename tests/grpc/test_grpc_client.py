"""`mlfn invoke URL --protocol grpc` prints what the REST v2 invoke prints."""
from __future__ import annotations

import json

from click.testing import CliRunner

from mlfn.cli import main
from tests.runtime.conftest import digit_png


def test_invoke_grpc_prints_what_rest_v2_prints(server, digits, tmp_path):
    x, y = digits
    png = tmp_path / "digit.png"
    png.write_bytes(digit_png(x[0]))
    url = f"http://{server[0]}"
    outs = {}
    for protocol in ("v2", "grpc"):
        r = CliRunner().invoke(main, ["invoke", url, "--protocol", protocol, "--image", str(png)])
        assert r.exit_code == 0, r.output
        outs[protocol] = r.output
    assert outs["grpc"] == outs["v2"]
    doc = json.loads(outs["grpc"])
    assert doc["model_name"] == "digits" and doc["outputs"][0]["shape"] == [1, 10]
    assert max(range(10), key=lambda i: doc["outputs"][0]["data"][i]) == y[0]
    rows = json.dumps({"inputs": x[:2, :, :, None].tolist()})
    r = CliRunner().invoke(main, ["invoke", url, "--protocol", "grpc", "--json", rows, "--output", "json"])
    assert r.exit_code == 0 and json.loads(r.output)["result"]["outputs"][0]["shape"] == [2, 10]


def test_invoke_grpc_errors_are_one_sentence(server, tmp_path):
    url = f"http://{server[0]}"
    r = CliRunner().invoke(main, ["invoke", url, "--protocol", "grpc", "--model", "nope", "--json", '{"inputs": [[1]]}'])
    assert r.exit_code != 0 and "answered gRPC NOT_FOUND: model 'nope' is not in function 'digits'" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["invoke", "http://127.0.0.1:9", "--protocol", "grpc", "--model", "m",
                                  "--json", '{"inputs": [[1]]}', "--timeout", "5"])
    assert r.exit_code != 0 and "Cannot connect to http://127.0.0.1:9 over gRPC" in r.output


def test_invoke_grpc_through_an_ingress_address_sends_the_url_host_as_authority(server, tmp_path):
    """--host: connect to the ingress address; the function URL's host is the :authority
    (what a Knative ingress routes by); here the function itself stands in for the ingress."""
    from mlfn.grpc_client import grpc_target

    assert grpc_target("http://digits.default.example.com", "127.0.0.1:31080") == (
        "127.0.0.1:31080", False, "digits.default.example.com")
    r = CliRunner().invoke(main, ["invoke", "http://digits.default.example.com", "--protocol", "grpc",
                                  "--host", server[0], "--model", "digits", "--json", '{"inputs": [[0.5]]}'])
    assert r.exit_code != 0 and "INVALID_ARGUMENT" in r.output  # reached the function: it judged the input
