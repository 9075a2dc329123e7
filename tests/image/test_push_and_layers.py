"""Layer caching (only what changed is rebuilt) and pushing to a real registry."""
from __future__ import annotations

import pytest
import requests

from mlfn.image import build_image
from mlfn.config import load_config
from mlfn.errors import BuildError
from tests.image.conftest import AUTH_PASSWORD, AUTH_USER, edit_yaml

pytestmark = pytest.mark.docker


def _ids(result):
    return {layer["name"]: layer.get("diff_id") or tuple(layer.get("diff_ids", [])) for layer in result.layers}


def _baseline(project_copy):
    """The unchanged project built just before the change (a no-op when it matches digits_image)."""
    return build_image(load_config(str(project_copy)))


def test_changing_post_processing_rebuilds_only_the_config_layer(digits_image, project_copy, docker_client):
    digits_image = _baseline(project_copy)
    before = _ids(digits_image)
    edit_yaml(project_copy, lambda d: d["pipeline"]["post"].__setitem__(1, {"top_k": {"k": 2}}))
    after = build_image(load_config(str(project_copy)), tag="mlfnb-test/digits:post")
    try:
        now = _ids(after)
        assert [n for n in before if before[n] != now[n]] == ["config"]
        assert after.pipeline_hash != digits_image.pipeline_hash
        assert after.model_sha256 == digits_image.model_sha256
        assert after.content_hash != digits_image.content_hash
        # the engine reused its cached layers: same layer ids up to the model layer
        old = docker_client.api.inspect_image(digits_image.image_id)["RootFS"]["Layers"]
        new = docker_client.api.inspect_image(after.image_id)["RootFS"]["Layers"]
        assert old[:-1] == new[:-1] and old[-1] != new[-1]
    finally:
        docker_client.images.remove(after.image, force=True)


def test_changing_the_model_rebuilds_model_and_config_only(digits_image, project_copy, docker_client):
    digits_image = _baseline(project_copy)
    before = _ids(digits_image)
    edit_yaml(project_copy, lambda d: d["quantize"].update(mode="dynamic"))
    after = build_image(load_config(str(project_copy)), tag="mlfnb-test/digits:model")
    try:
        now = _ids(after)
        assert sorted(n for n in before if before[n] != now[n]) == ["config", "models"]
        assert after.quantization == "dynamic" and after.model_sha256 != digits_image.model_sha256
    finally:
        docker_client.images.remove(after.image, force=True)


def test_push_and_pull_back(digits_image, digits_project, registry, docker_client):
    repo = f"{registry}/mlfn-test/digits"
    r = build_image(load_config(str(digits_project)), push=repo)
    assert r.repo_digest == f"{repo}@{r.digest}" and r.digest.startswith("sha256:") and r.digest != r.image_id
    assert r.compressed_size_bytes and r.compressed_size_bytes < r.size_bytes
    # the registry serves that manifest
    tag = r.image.rsplit(":", 1)[1]
    resp = requests.get(f"http://{registry}/v2/mlfn-test/digits/manifests/{tag}",
                        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == r.digest
    # pull it back by digest into a fresh name
    docker_client.images.remove(f"{repo}:{tag}", force=False)
    pulled = docker_client.images.pull(r.repo_digest)
    try:
        assert pulled.id == r.image_id
    finally:
        docker_client.images.remove(r.repo_digest, force=True)


def test_push_needs_credentials_and_never_prints_them(digits_image, digits_project, auth_registry, docker_login,
                                                      docker_client):
    from click.testing import CliRunner

    from mlfn.cli import main

    repo = f"{auth_registry}/mlfn-test/digits"
    with pytest.raises(BuildError, match=r"refused the push .*unauthorized.*docker login"):
        build_image(load_config(str(digits_project)), push=repo)
    docker_login(auth_registry, AUTH_USER, AUTH_PASSWORD)
    res = CliRunner().invoke(main, ["build", "--config", str(digits_project), "--push", f"{repo}:v1"])
    try:
        assert res.exit_code == 0, res.output
        assert f"{repo}@sha256:" in res.stdout
        assert AUTH_PASSWORD not in res.output and AUTH_PASSWORD not in (res.stderr or "")
    finally:
        docker_client.images.remove(f"{repo}:v1", force=True)


def test_unreachable_registry_is_one_sentence(digits_image, digits_project):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(BuildError) as e:
        build_image(load_config(str(digits_project)), push=f"127.0.0.1:{port}/x/digits")
    assert f"127.0.0.1:{port}" in str(e.value) and "unreachable" in str(e.value)
    import docker

    leftovers = [t for img in docker.from_env().images.list() for t in img.tags if t.startswith(f"127.0.0.1:{port}/")]
    assert leftovers == []  # a failed push leaves no tag behind
