"""Fixtures of the gRPC / h2c tests: the runtime tests' models and in-process server."""
from __future__ import annotations

import pytest

from tests.runtime.conftest import digit_png, digits, digits_dir, make_function_dir, rt_models, running  # noqa: F401


@pytest.fixture(scope="module")
def server(digits_dir):
    """(host:port, server) of the real server on an ephemeral port, in this process."""
    with running(digits_dir) as (url, srv):
        yield url.removeprefix("http://"), srv
