"""Fixtures for the rollout tests: real containers on the in-process local controller
(`local_api` of tests/targets/openwhisk), running the tiny test action whose versions
misbehave on demand through their env (MLFN_TEST_FAIL_RATE, MLFN_TEST_DELAY, MLFN_TEST_WRONG;
see tests/targets/openwhisk/action/action_server.py).

- `rollout_image`: the test action image under its own tag (the openwhisk tests' tag may be
  rebuilt from another checkout of that folder).
- `two_versions(v2_env)`: a fresh function with v1 (healthy, default alias 100%) and v2 (env).
- `load_dir`: a folder of JSON inputs for --load; `probe_npz`: a labelled probe set.
"""
from __future__ import annotations

import json

import pytest

from tests.targets.conftest import _no_openwhisk_action_env  # noqa: F401 - autouse fixture
from tests.targets.openwhisk.conftest import (action_image, fn_name, local_api, make_lifecycle,  # noqa: F401
                                              spec)

ROLLOUT_IMAGE = "mlfn-rollout-test-action:1"


@pytest.fixture(scope="session")
def rollout_image(base_image, tmp_path_factory, local_api):
    from tests.targets.openwhisk.action.build import build_action_image

    return build_action_image(base_image, ROLLOUT_IMAGE)


@pytest.fixture
def lifecycle(local_api):
    return make_lifecycle(local_api.url)


@pytest.fixture
def two_versions(lifecycle, rollout_image, fn_name):
    """deploy(v2_env) -> function name with v1 healthy on the default alias and v2 with v2_env."""
    def deploy(v2_env: dict) -> str:
        lifecycle.publish(spec(fn_name, "a1", image=rollout_image))
        lifecycle.publish(spec(fn_name, "b2", image=rollout_image, env=v2_env))
        return fn_name

    return deploy


@pytest.fixture(scope="session")
def load_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("load")
    for i in range(10):
        (d / f"{i}.json").write_text(json.dumps({"n": i}))
    return d


@pytest.fixture(scope="session")
def probe_npz(tmp_path_factory):
    import numpy as np

    x = np.eye(10, dtype="float32")[np.arange(40) % 10] * 0.9
    path = tmp_path_factory.mktemp("probe") / "probe.npz"
    np.savez(path, x=x, y=np.arange(40) % 10)
    return path


def wsk_flags(local_api) -> list:
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH

    return ["--target", "openwhisk", "--apihost", local_api.url, "--auth", GUEST_AUTH, "--namespace", "guest"]
