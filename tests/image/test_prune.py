"""`mlfn images prune`: old images of a function go; deployed and recent ones stay."""
from __future__ import annotations

import io
import uuid

import pytest

from mlfn.errors import MlfnError
from mlfn.image.prune import deployed_keys, prune_hint, prune_images

pytestmark = pytest.mark.docker


@pytest.fixture
def images(docker_client):
    """Four label-only images of a fresh function name, oldest first."""
    function = f"prune-{uuid.uuid4().hex[:8]}"
    refs = []
    for i in range(4):
        dockerfile = (f"FROM scratch\nLABEL dev.mlfn.function={function} "
                      f"dev.mlfn.content-hash=sha256:{i:064x} dev.mlfn.build={i}\n")
        ref = f"mlfn/{function}:{i}"
        docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
        refs.append(ref)
    yield function, refs
    for ref in refs:
        try:
            docker_client.images.remove(ref, force=True)
        except Exception:
            pass


def test_prune_keeps_deployed_and_newest_images(docker_client, images):
    function, refs = images
    assert prune_hint(docker_client, function) is None  # 4 builds: no hint yet
    deployed = {f"sha256:{0:064x}"}  # the oldest build is still deployed
    dry = prune_images(docker_client, function, deployed, keep=1, dry_run=True)
    assert sorted(r["image"] for r in dry.removed) == sorted(refs[1:3])
    assert len(docker_client.images.list(filters={"label": f"dev.mlfn.function={function}"})) == 4
    done = prune_images(docker_client, function, deployed, keep=1)
    left = {t for i in docker_client.images.list(filters={"label": f"dev.mlfn.function={function}"}) for t in i.tags}
    assert left == {refs[0], refs[3]}
    assert {k["why"] for k in done.kept} == {"a deployed version uses it", "one of the 1 newest builds"}


def test_prune_refuses_when_deployed_versions_cannot_be_listed():
    def unreachable():
        raise MlfnError("Cannot reach the OpenWhisk API at https://ow.example")

    with pytest.raises(MlfnError, match=r"Cannot tell which images .* nothing was removed"):
        deployed_keys("digits", unreachable)
