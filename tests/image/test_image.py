"""Real Docker builds: the base image and the digits function image."""
from __future__ import annotations

import base64
import json
import os

from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from tests.image.conftest import running

pytestmark = pytest.mark.docker


def _exec(client, image, cmd, **kw):
    """Run `cmd` (a list, exec form) in a throwaway container; return (exit code, output)."""
    c = client.containers.create(image, cmd, labels={"dev.mlfn.test": "build"}, **kw)
    try:
        try:
            c.start()
        except Exception as e:  # docker refuses to start a missing executable
            return 127, str(e)
        rc = c.wait(timeout=60)["StatusCode"]
        return rc, c.logs().decode()
    finally:
        c.remove(force=True)


def test_base_image_is_distroless_and_non_root(base_image, docker_client):
    img = docker_client.images.get(base_image)
    assert img.attrs["Config"]["User"].split(":")[0] == "65532"
    rc, out = _exec(docker_client, base_image, ["python3", "-c",
                    "import os, pwd, json, hashlib, ctypes, http.server; print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name)"])
    assert (rc, out.strip()) == (0, "65532 nonroot")
    code = ("import os; print([p for p in ('/bin/sh','/usr/bin/sh','/bin/bash','/usr/bin/apt','/usr/bin/apt-get',"
            "'/usr/bin/dpkg','/var/lib/dpkg','/etc/apt') if os.path.lexists(p)])")
    rc, out = _exec(docker_client, base_image, ["python3", "-c", code])
    assert (rc, out.strip()) == (0, "[]")
    rc, _ = _exec(docker_client, base_image, ["sh", "-c", "true"])
    assert rc != 0
    # the stdlib is precompiled (sourceless .pyc), so a read-only root never recompiles it
    rc, out = _exec(docker_client, base_image, ["python3", "-c",
                    "import json; print(json.__file__, type(json.__spec__.loader).__name__)"])
    assert (rc, out.split()) == (0, ["/usr/lib/python3.11/json/__init__.pyc", "SourcelessFileLoader"])


def test_digits_image_answers_run_with_the_right_label(digits_image, digits_project, docker_client):
    r = digits_image
    assert r.image.startswith("mlfn/digits:") and r.digest == r.image_id and r.repo_digest is None
    assert [layer["name"] for layer in r.layers] == ["base", "deps", "runtime", "models", "config"]
    assert r.size_bytes == docker_client.images.get(r.image).attrs["Size"]
    assert 0 < r.compressed_size_bytes < r.size_bytes  # gzip layers as a registry stores them
    assert all(layer["compressed_size_bytes"] for layer in r.layers)
    assert r.labels["dev.mlfn.model.sha256"] == r.model_sha256
    assert r.labels["dev.mlfn.quantization"] == "int8" == r.quantization
    assert r.labels["dev.mlfn.pipeline.hash"] == r.pipeline_hash
    assert r.labels["dev.mlfn.function"] == "digits"
    assert r.labels["dev.mlfn.content-hash"] == r.content_hash
    assert "org.opencontainers.image.created" in r.labels
    cfg = docker_client.images.get(r.image).attrs["Config"]
    assert cfg["User"] == "65532" and cfg["Cmd"] == ["python3", "-m", "mlfn_runtime"]
    assert "MLFN_FUNCTION_DIR=/opt/mlfn/function" in cfg["Env"]

    inputs = sorted((digits_project / "inputs").glob("digit-*.png"))
    assert inputs
    with running(r.image, read_only=True) as url:
        assert requests.post(url + "/init", json={"value": {}}, timeout=10).status_code == 200
        for png in inputs:
            label = png.stem.split("-")[1]
            body = {"value": {"image": base64.b64encode(png.read_bytes()).decode()}}
            resp = requests.post(url + "/run", json=body, timeout=10)
            assert resp.status_code == 200, resp.text
            pred = resp.json()["predictions"][0]
            assert pred["label"] == label, (png.name, pred)
        bad = requests.post(url + "/predict", json={"image": "not base64 at all!"}, timeout=10)
        assert 400 <= bad.status_code < 500 and "error" in bad.json()
        assert requests.get(url + "/v2/health/ready", timeout=5).status_code == 200


def test_rebuilding_identical_content_is_a_no_op(digits_image, digits_project):
    from mlfn.image import build_image
    from mlfn.config import load_config

    again = build_image(load_config(str(digits_project)))
    assert again.cached and again.image == digits_image.image and again.image_id == digits_image.image_id
    assert again.content_hash == digits_image.content_hash


def test_cli_build_json(digits_image, digits_project):
    from mlfn.cli import main

    res = CliRunner().invoke(main, ["build", "--config", str(digits_project), "--output", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["image"] == digits_image.image and doc["digest"] == digits_image.digest
    assert doc["size_bytes"] == digits_image.size_bytes
    res = CliRunner().invoke(main, ["build", "--config", str(digits_project)])
    assert res.exit_code == 0
    assert "deps" in res.stdout and "digest  sha256:" in res.stdout and "uncompressed" in res.stdout


def test_cli_errors_are_one_sentence(digits_project, tmp_path, monkeypatch):
    from mlfn.cli import main

    # no daemon: say so and suggest the daemonless builder
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    res = CliRunner().invoke(main, ["build", "--config", str(digits_project)])
    assert res.exit_code == 1
    assert "No Docker engine is reachable" in res.stderr and "--builder oci" in res.stderr
    assert "Traceback" not in res.output
    monkeypatch.delenv("DOCKER_HOST")
    # missing base image: suggest mlfn base build
    monkeypatch.setenv("MLFN_BUILD__BASE_IMAGE", "mlfn-base:does-not-exist")
    res = CliRunner().invoke(main, ["build", "--config", str(digits_project)])
    assert res.exit_code == 1 and "mlfn base build" in res.stderr


@pytest.mark.slow
def test_debug_shell_base_and_a_user_chosen_base(digits_image, digits_project, docker_client, tmp_path):
    """`--debug-shell` adds busybox's sh; any Python 3.11 image works as build.base_image."""
    from mlfn.image import build_base_image, build_image
    from mlfn.config import load_config

    tag = "mlfnb-test/base-debug:3.11"
    images = [tag]
    try:
        r = build_base_image(tag, debug_shell=True, force=True)
        assert r.built and r.debug_shell
        rc, out = _exec(docker_client, tag, ["sh", "-c", "id -u && echo shell-ok"])
        assert rc == 0 and out.split() == ["65532", "shell-ok"]
        cfg = load_config(str(digits_project), overrides={"build.base_image": tag})
        fn = build_image(cfg, tag="mlfnb-test/digits:on-debug-base")
        images.append(fn.image)
        assert fn.labels["org.opencontainers.image.base.name"] == tag
        # the same four function layers on another base (docker stamps directory mtimes at
        # build time, so compare sizes; the oci builder is the byte-reproducible one)
        assert [(layer["name"], layer["size_bytes"]) for layer in fn.layers[1:]] == \
            [(layer["name"], layer["size_bytes"]) for layer in digits_image.layers[1:]]
        with running(fn.image) as url:
            png = digits_project / "inputs" / "digit-3.png"
            resp = requests.post(url + "/predict", data=png.read_bytes(), headers={"Content-Type": "image/png"},
                                 timeout=10)
            assert resp.status_code == 200 and resp.json()["predictions"][0]["label"] == "3"
    finally:
        for ref in reversed(images):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:
                pass


@pytest.mark.slow
def test_tflite_runtime_image(base_image, digits_project, docker_client, tmp_path):
    """build.runtime: tflite-runtime installs tflite-runtime 2.14 + numpy<2 instead of LiteRT."""
    import shutil

    from mlfn.image import build_image
    from mlfn.config import load_config
    from tests.image.conftest import edit_yaml

    project = tmp_path / "digits"
    shutil.copytree(digits_project, project, ignore=shutil.ignore_patterns(".mlfn"))

    def change(d):
        d["build"]["runtime"] = "tflite-runtime"
        d["quantize"]["target"] = "tflite-runtime"

    edit_yaml(project, change)
    r = build_image(load_config(str(project)), tag="mlfnb-test/digits:tflite-runtime")
    try:
        assert r.labels["dev.mlfn.runtime"] == "tflite-runtime"
        deps = Path(r.context_dir) / "deps"
        assert (deps / "tflite_runtime").is_dir() and not (deps / "ai_edge_litert").exists()
        from mlfn.image.base_image import python_packages

        numpy_of_base = python_packages(docker_client.images.get(base_image).labels).get("numpy", "")
        numpy_in_deps = [p.name for p in deps.glob("numpy-*.dist-info")]
        # numpy<2 comes with the deps, or from a base that provides a 1.x (mlfn's: Debian's 1.24)
        assert numpy_of_base.startswith("1.") and not numpy_in_deps or any(n.startswith("numpy-1.") for n in numpy_in_deps)
        with running(r.image, read_only=True) as url:
            png = project / "inputs" / "digit-9.png"
            body = {"value": {"image": base64.b64encode(png.read_bytes()).decode()}}
            assert requests.post(url + "/init", json={"value": {}}, timeout=10).status_code == 200
            resp = requests.post(url + "/run", json=body, timeout=10)
            assert resp.status_code == 200 and resp.json()["predictions"][0]["label"] == "9"
    finally:
        docker_client.images.remove(r.image, force=True)
