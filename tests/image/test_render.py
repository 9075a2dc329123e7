"""The Dockerfile template and the pieces of the build context that need no Docker."""
from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

import pytest

from mlfn.image.context import LAYERS, oci_labels, render_dockerfile, repository_url
from mlfn.image.deps import pipeline_decodes_images, requirements_for
from mlfn.image.docker_builder import parse_push_ref
from mlfn.image.result import image_reference
from mlfn.config import from_dict
from mlfn.errors import BuildError


def test_dockerfile_layers_in_cache_order():
    text = render_dockerfile("mlfn-base:3.11")
    assert text.splitlines()[3] == "FROM mlfn-base:3.11"
    copies = re.findall(r"^COPY (\S+) (\S+)$", text, re.M)
    assert copies == [(f"{folder}/", dest) for _, folder, dest in LAYERS]
    assert "USER 65532" in text
    assert "EXPOSE 8080" in text
    assert 'CMD ["python3", "-m", "mlfn_runtime"]' in text  # exec form, no shell
    env = re.search(r"^ENV (.*?)(?=^\S)", text, re.M | re.S).group(1)
    assert "PYTHONPATH=/opt/mlfn/runtime:/opt/mlfn/deps" in env
    assert "MLFN_FUNCTION_DIR=/opt/mlfn/function" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "LABEL" not in text


def test_labels_are_one_step_and_quoted():
    text = render_dockerfile("python:3.11-slim", {"b.key": 'say "hi" \\ now', "a.key": "x"})
    assert text.count("LABEL") == 1
    label = text[text.index("LABEL"):]
    assert label.index("a.key") < label.index("b.key")
    assert 'b.key="say \\"hi\\" \\\\ now"' in label
    assert "FROM python:3.11-slim" in text


def test_credentials_never_reach_source_label():
    assert repository_url("https://user:ghp_secret@github.com/a/b.git") == "https://github.com/a/b.git"
    assert repository_url("git@github.com:a/b.git") == "https://github.com/a/b.git"
    assert repository_url("ssh://git@git.example.org:2222/team/b") == "https://git.example.org/team/b"


@pytest.mark.parametrize("remote", ["/home/me/src/b.git", "../b", "file:///srv/git/b.git", "C:/repos/b"])
def test_a_local_remote_is_no_source_label(remote, tmp_path):
    assert repository_url(remote) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
    cfg = SimpleNamespace(project_dir=tmp_path, name="digits", build=SimpleNamespace(base_image="b:1"))
    labels = oci_labels(cfg, "v1")
    assert "org.opencontainers.image.source" not in labels and labels["org.opencontainers.image.title"] == "digits"


def test_requirements_follow_the_pipeline():
    images = from_dict({"pipeline": {"pre": ["decode_image", {"resize": {"width": 8, "height": 8}}]}})
    tensors = from_dict({"pipeline": {"pre": [{"scale": {"factor": 2}}]}})
    assert pipeline_decodes_images([images.pipeline.pre])
    assert not pipeline_decodes_images([tensors.pipeline.pre])
    with_pil = requirements_for(images)
    assert any(r.lower().startswith("pillow") for r in with_pil)
    assert any(r.startswith("ai-edge-litert") for r in with_pil)
    assert not any(r.lower().startswith("pillow") for r in requirements_for(tensors))
    legacy = requirements_for(from_dict({"build": {"runtime": "tflite-runtime"}}))
    assert "tflite-runtime==2.14.*" in legacy and "numpy<2" in legacy
    assert not any(r.startswith("ai-edge-litert") for r in legacy)


def test_tags_and_push_references():
    assert image_reference(None, "mlfn/digits", "abc123") == "mlfn/digits:abc123"
    assert image_reference("dev", "mlfn/digits", "abc123") == "mlfn/digits:dev"
    assert image_reference("localhost:5000/x/digits", "mlfn/digits", "abc") == "localhost:5000/x/digits:abc"
    assert image_reference("me/digits:v2", "mlfn/digits", "abc") == "me/digits:v2"
    assert parse_push_ref("localhost:5000/team/digits", "abc") == ("localhost:5000/team/digits", "abc")
    assert parse_push_ref("localhost:5000/team/digits:v1", "abc") == ("localhost:5000/team/digits", "v1")
    with pytest.raises(BuildError, match="not a valid image reference"):
        parse_push_ref("localhost:5000/Team/Digits", "abc")
    with pytest.raises(BuildError, match="not a digest"):
        parse_push_ref("localhost:5000/x@sha256:00", "abc")


def test_pillow_follows_the_runtime_steps_that_import_it():
    """to_array works on arrays without Pillow, so a tensor pipeline with it needs none;
    every step the runtime runs on Pillow images does."""
    from mlfn_runtime.pipeline import STEPS

    assert not pipeline_decodes_images([["to_array", {"scale": {"factor": 2}}]])
    for name, cls in STEPS.items():
        assert pipeline_decodes_images([[name]]) == cls.image, name
    assert pipeline_decodes_images([[{"convert": {"mode": "L"}}]])


def test_label_values_reach_the_image_exactly(docker_client, tmp_path):
    """The engine's LABEL parsing (variable substitution, escapes) gives back what mlfn wrote."""
    from mlfn.image.context import _dockerquote

    value = 'costs $HOME and ${PATH}, says "hi" \\ done'
    (tmp_path / "Dockerfile").write_text(f"FROM scratch\nENV HOME=/root\nLABEL dev.mlfn.test={_dockerquote(value)}\n")
    tag = "mlfn-review-labels:test"
    image, _ = docker_client.images.build(path=str(tmp_path), tag=tag, rm=True)
    try:
        assert image.labels["dev.mlfn.test"] == value
    finally:
        docker_client.images.remove(tag, force=True)
