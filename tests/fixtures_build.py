"""pytest plugin (loaded by tests/conftest.py): images built from the digits sample.

- `base_image`: the tag of the base image (`mlfn-base:3.11`), built with
  `mlfn base build` if this machine does not have it yet (about 10 s).
- `digits_image`: the `mlfn.image.BuildResult` of the digits function image built with
  the local Docker engine from the `digits_project` fixture (tests/fixtures_model.py).
  Its default tag is derived from the content hash, so identical content is built once.
Runtime and deploy tests run this image; keep the names and types stable.
"""
from __future__ import annotations

import os

import pytest

BASE_TAG = os.environ.get("MLFN_BUILD__BASE_IMAGE") or "mlfn-base:3.11"  # the base the digits config builds on


@pytest.fixture(scope="session")
def base_image() -> str:
    from mlfn.image import build_base_image

    build_base_image(BASE_TAG)  # a no-op when the tag exists
    return BASE_TAG


@pytest.fixture(scope="session")
def digits_image(base_image, digits_project):
    from mlfn.image import build_image
    from mlfn.config import load_config

    cfg = load_config(str(digits_project))
    return build_image(cfg, builder="docker")
