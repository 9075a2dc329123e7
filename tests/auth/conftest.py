"""Fixtures of the auth tests: the runtime's model fixtures, and generated credentials."""
from __future__ import annotations

import pytest

from tests.auth.credentials import make_material
from tests.runtime.conftest import _restore_environ, digit_png, make_function_dir, rt_models, running  # noqa: F401


@pytest.fixture(scope="session")
def material():
    return make_material(revoked_too=False)
