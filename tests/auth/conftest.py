"""Fixtures of the auth tests: the runtime's model fixtures, and generated credentials."""
from __future__ import annotations

import pytest

from tests.auth.credentials import make_material
from tests.runtime.conftest import _restore_environ, digit_png, make_function_dir, rt_models, running  # noqa: F401
from tests.targets.openwhisk.conftest import action_image, local_api, rest_api  # noqa: F401


@pytest.fixture(scope="session")
def material():
    return make_material(revoked_too=False)


@pytest.fixture(scope="session")
def auth_image(digits_project, base_image, tmp_path_factory):
    """The digits function image built with mlfn.yaml's `auth:` (tests.auth.credentials.AUTH_SETTINGS)."""
    import shutil

    import yaml

    from mlfn.config import load_config
    from mlfn.image import build_image
    from tests.auth.credentials import AUTH_SETTINGS

    project = tmp_path_factory.mktemp("authfn") / "digits"
    shutil.copytree(digits_project, project, ignore=shutil.ignore_patterns(".mlfn"))
    cfg = yaml.safe_load((project / "mlfn.yaml").read_text())
    cfg["auth"] = dict(AUTH_SETTINGS)
    (project / "mlfn.yaml").write_text(yaml.safe_dump(cfg))
    return build_image(load_config(str(project)), builder="docker")
