"""`mlfn run`: containers are named per project, so two projects' functions of one name coexist."""
from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from mlfn.cli import main
from mlfn.runner import container_name


def _project(folder, name="colors"):
    folder.mkdir(parents=True)
    (folder / "mlfn.yaml").write_text(yaml.safe_dump({"name": name}))
    return folder


def test_container_names_differ_per_project_and_are_stable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert container_name("colors", a) != container_name("colors", b)
    assert container_name("colors", a) == container_name("colors", tmp_path / "x" / ".." / "a")
    assert container_name("colors", a).startswith("mlfn-colors-")
    assert container_name(None, None, "reg/x/colors:1") != container_name(None, None, "reg/y/colors:1")


@pytest.mark.docker
def test_stopping_one_project_leaves_another_projects_container(tmp_path):
    import docker

    client = docker.from_env()
    a, b = _project(tmp_path / "a"), _project(tmp_path / "b")
    name_a = container_name("colors", a)
    client.containers.create("mlfn-base:3.11", name=name_a, labels={"dev.mlfn.test": "runner"})
    try:
        r = CliRunner().invoke(main, ["run", "--stop", "-c", str(b)])
        assert r.exit_code == 0 and "No container" in r.output, r.output
        assert client.containers.get(name_a)  # still there
        r = CliRunner().invoke(main, ["run", "--stop", "-c", str(a)])
        assert r.exit_code == 0 and f"Stopped {name_a}" in r.output, r.output
    finally:
        try:
            client.containers.get(name_a).remove(force=True)
        except docker.errors.NotFound:
            pass
