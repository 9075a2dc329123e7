"""The real digits function image deployed to the local controller: first version and
default alias, idempotent re-deploy, a weighted alias whose router runs in the function
image itself, and the alias exported as a protected web action."""
from __future__ import annotations

import base64
import collections

import pytest
import requests

from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INPUTS = ROOT / "samples" / "digits" / "inputs"


def test_digits_versions_router_and_web(digits_image, digits_project, local_api):
    from mlfn import releases as lib
    from mlfn.config import load_config
    from mlfn.targets.interface import VersionSpec

    cfg = load_config(str(digits_project)).override({"name": "digits-e2e"})
    opts = lib.TargetOptions(target="local", port=local_api.server_address[1])
    out = lib.deploy(cfg, opts, build=digits_image)
    assert out.created and out.version.name == "v1" and out.version.digest == digits_image.digest
    assert [(a.name, a.weights) for a in out.aliases] == [("default", {"v1": 100})]
    assert not lib.deploy(cfg, opts, build=digits_image).created  # identical content: no v2

    image = base64.b64encode((INPUTS / "digit-3.png").read_bytes()).decode()
    res = lib.invoke("digits-e2e", {"image": image}, options=opts)
    assert res.version == "v1" and res.result["predictions"][0]["label"] == "3"
    with pytest.raises(Exception, match="image"):
        lib.invoke("digits-e2e", {"image": "not base64 png"}, options=opts)

    # a second version of the same image, then a weighted alias: the router runs as code in
    # the function image (the runtime honours code sent in /init)
    t = lib.open_target(cfg, opts)
    t.publish(VersionSpec(function="digits-e2e", image=digits_image.image, digest=digits_image.digest,
                          model_sha256=digits_image.model_sha256, quantization=digits_image.quantization,
                          pipeline_hash=digits_image.pipeline_hash, content_hash=digits_image.content_hash + "-b"))
    ab = lib.set_traffic("digits-e2e", {"v1": 50, "v2": 50}, alias="ab", options=opts, web=True)
    served = collections.Counter()
    for _ in range(12):
        r = lib.invoke("digits-e2e@ab", {"image": image}, options=opts)
        assert r.result["predictions"][0]["label"] == "3"
        served[r.version] += 1
    assert set(served) == {"v1", "v2"}

    # web action: apps POST the raw image
    url = ab.alias.web_url
    assert url.endswith("/api/v1/web/guest/digits-e2e/ab")
    r = requests.post(url, data=(INPUTS / "digit-7.png").read_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "7"
    status = lib.status("digits-e2e", opts)
    v = status.versions[0]
    assert v.model_sha256 == digits_image.model_sha256 and v.quantization == "int8"
