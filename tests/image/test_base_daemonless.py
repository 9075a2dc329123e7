"""`mlfn base build --no-import`: the base for the daemonless builder, without Docker."""
from __future__ import annotations

import json
import shutil
import tarfile

import pytest
from click.testing import CliRunner

from mlfn.cli import main


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed")
def test_no_import_keeps_a_reproducible_rootfs_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    res = CliRunner().invoke(main, ["base", "build", "--tag", "mlfnb-test/base:nodaemon", "--no-import", "-o", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["built"] and doc["image_id"] is None
    with tarfile.open(doc["rootfs_tar"]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    names = set(members)
    assert "usr/bin/python3.11" in names and members["usr/bin/python3"].linkname == "python3.11"
    assert not names & {"bin/sh", "usr/bin/sh", "usr/bin/dpkg", "usr/bin/apt", "var/lib/dpkg/status"}
    assert not any(n.startswith(("usr/share/doc/", "etc/apt/")) for n in names)
    assert members["home/nonroot"].uid == 65532 and members["tmp"].mode == 0o1777
    passwd = members["etc/passwd"]
    assert passwd.isreg() and len({m.mtime for m in members.values()}) == 1  # one fixed mtime
    # the standard library and numpy as sourceless .pyc (one copy of each module)
    assert {"usr/lib/python3.11/json/__init__.pyc", "usr/lib/python3/dist-packages/numpy/__init__.pyc"} <= names
    assert not [n for n in names if n.startswith(("usr/lib/python3.11/", "usr/lib/python3/")) and n.endswith(".py")]
    assert members["usr/lib/x86_64-linux-gnu/liblapack.so.3"].linkname == "lapack/liblapack.so.3"
    # LAPACK: only what numpy links (slim.subset_lapack, with binutils); liblapack-dev's files gone
    if shutil.which("ld") and shutil.which("nm"):
        assert members["usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3.11.0"].size < 2_000_000  # the full one: 7.3 MB
    assert not [n for n in names if n.endswith((".a", ".pc")) or n.startswith("usr/include/")]
    # the standard library pruned to what the runtime can reach (stdlib_keep.py)
    assert "usr/lib/python3.11/http/server.pyc" in names and "usr/lib/python3.11/asyncio/__init__.pyc" not in names
    first = doc["rootfs_sha256"]

    again = CliRunner().invoke(main, ["base", "build", "--tag", "mlfnb-test/base:nodaemon", "--no-import", "-o", "json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["built"] is False
    forced = CliRunner().invoke(main, ["base", "build", "--tag", "mlfnb-test/base:nodaemon", "--no-import", "--force",
                                       "-o", "json"])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["rootfs_sha256"] == first  # reproducible


def test_base_build_without_docker_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    res = CliRunner().invoke(main, ["base", "build", "--tag", "mlfnb-test/base:x"])
    assert res.exit_code == 1 and "No Docker engine is reachable" in res.stderr


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed")
def test_an_image_without_its_cached_rootfs_is_rebuilt(base_image, tmp_path, monkeypatch):
    """The daemonless builder needs the cached root file system: a base that is in Docker
    but not in mlfn's cache (cache cleared) is rebuilt rather than reused half-way."""
    import docker

    client = docker.from_env()
    tag = "mlfnb-test/base:nocache"
    client.images.get(base_image).tag(tag)
    monkeypatch.setenv("MLFN_CACHE_DIR", str(tmp_path / "empty-cache"))
    try:
        res = CliRunner().invoke(main, ["base", "build", "--tag", tag, "-o", "json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["built"] is True and doc["rootfs_tar"] and tarfile.is_tarfile(doc["rootfs_tar"])
        again = CliRunner().invoke(main, ["base", "build", "--tag", tag, "-o", "json"])
        assert again.exit_code == 0 and json.loads(again.stdout)["built"] is False
    finally:
        client.images.remove(tag, force=True)
