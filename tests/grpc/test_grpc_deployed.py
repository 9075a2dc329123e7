"""`mlfn invoke NAME --protocol grpc`: Knative calls the Service's URL over gRPC (through
--host, the ingress address: here the real function server stands in for the ingress);
OpenWhisk refuses in one sentence, its controller passes no gRPC."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.errors import TargetError
from tests.targets.knative.conftest import api, cfg, kubeconfig, make_lifecycle, version_spec  # noqa: F401


def test_knative_invoke_grpc_through_the_ingress_address(api, make_lifecycle, server, digits):  # noqa: F811
    x, y = digits
    make_lifecycle().publish(version_spec(1))
    target = make_lifecycle(host=server[0]).target
    payload = {"inputs": x[:2, :, :, None].tolist()}
    r = target.invoke("digits", payload, protocol="grpc")
    assert r.version == "v1" and r.result["model_name"] == "digits"
    logits = np.array(r.result["outputs"][0]["data"]).reshape(r.result["outputs"][0]["shape"])
    assert logits.shape == (2, 10)
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        target.invoke("digits", {"inputs": [[1.0]]}, protocol="grpc")


def test_openwhisk_refuses_grpc_in_one_sentence():
    r = CliRunner().invoke(main, ["invoke", "digits", "--target", "openwhisk", "--apihost", "http://127.0.0.1:9",
                                  "--auth", "a:b", "--protocol", "grpc", "--json", '{"inputs": [[1]]}'])
    assert r.exit_code != 0 and "passes no gRPC" in r.output and "Traceback" not in r.output
