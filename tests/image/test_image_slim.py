"""The slim image (issue 17): numpy from the base, sourceless bytecode, stripped shared
objects, per-package sizes, and, inside the REAL digits image, every module the runtime
can reach imports and one prediction is right."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlfn.image.base_image import PACKAGES_LABEL, python_packages
from mlfn.image.deps import requirements_for
from mlfn.image.slim import NUMPY_INIT_EDITS, NUMPY_LAZY, add_package_sizes, compile_sourceless, lazy_numpy_submodules, package_sizes


def _cfg(pre, runtime="litert"):
    from mlfn.config import from_dict

    return from_dict({"name": "slim", "pipeline": {"pre": pre}, "build": {"runtime": runtime}})


def test_numpy_is_left_out_of_the_deps_when_the_base_provides_it():
    images = _cfg(["decode_image", {"resize": {"width": 8, "height": 8}}])
    on_other_base = requirements_for(images)
    on_mlfn_base = requirements_for(images, python_packages({PACKAGES_LABEL: "numpy==1.24.2"}))
    assert any(r.startswith("numpy") for r in on_other_base)
    assert not any(r.startswith("numpy") for r in on_mlfn_base)
    assert [r for r in on_other_base if not r.startswith("numpy")] == on_mlfn_base
    legacy = requirements_for(_cfg([], runtime="tflite-runtime"), {"numpy": "1.24.2"})
    assert legacy == ["tflite-runtime==2.14.*"]


def test_python_packages_reads_the_base_label():
    assert python_packages({PACKAGES_LABEL: "numpy==1.24.2 foo==2"}) == {"numpy": "1.24.2", "foo": "2"}
    assert python_packages({}) == {}


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="image bytecode is compiled by Python 3.11")
def test_sourceless_modules_import_without_their_source(tmp_path):
    pkg = tmp_path / "site" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def answer():\n    return 6 * 7\n")
    (pkg / "broken.py").write_text("def (:\n")  # does not compile: its source stays
    compile_sourceless(tmp_path / "site", ddir="/opt/site")
    assert not (pkg / "mod.py").exists() and (pkg / "mod.pyc").is_file()
    assert (pkg / "broken.py").exists() and not list(pkg.rglob("__pycache__"))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import pkg.mod as m; "
            "print(m.answer(), type(m.__spec__.loader).__name__, m.answer.__code__.co_filename)")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path / "site")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["42", "SourcelessFileLoader", "/opt/site/pkg/mod.py"]


def test_package_sizes_count_vendored_libraries_and_metadata_with_their_package(tmp_path):
    (tmp_path / "PIL").mkdir()
    (tmp_path / "PIL" / "Image.pyc").write_bytes(b"x" * 100)
    (tmp_path / "pillow.libs").mkdir()
    (tmp_path / "pillow.libs" / "libjpeg.so").write_bytes(b"x" * 1000)
    (tmp_path / "pillow-13.0.0.dist-info").mkdir()
    (tmp_path / "pillow-13.0.0.dist-info" / "METADATA").write_bytes(b"x" * 10)
    (tmp_path / "ai_edge_litert").mkdir()
    (tmp_path / "ai_edge_litert" / "lib.so").write_bytes(b"x" * 5000)
    assert package_sizes(tmp_path) == {"ai_edge_litert": 5000, "PIL": 1110}
    layers = add_package_sizes([{"name": "base"}, {"name": "deps"}], tmp_path.parent / "none", {
        "dev.mlfn.base.sizes": "python=5 numpy=7"})
    assert layers == [{"name": "base", "packages": {"python": 5, "numpy": 7}}, {"name": "deps"}]


# Run inside the image: import every module of mlfn_runtime, numpy, PIL (when bundled)
# and the LiteRT interpreter; report failures, where numpy comes from, and whether any
# standard-library source is left.
IMPORT_ALL = r'''
import importlib, json, os, pkgutil, sys
failed = {}
def walk(name):
    try:
        pkg = importlib.import_module(name)
    except Exception as e:
        failed[name] = repr(e); return
    for m in pkgutil.walk_packages(getattr(pkg, "__path__", []), name + "."):
        try:
            importlib.import_module(m.name)
        except Exception as e:
            failed[m.name] = repr(e)
import warnings; warnings.simplefilter("ignore")
for top in ("mlfn_runtime", "numpy", "PIL"):
    walk(top)
importlib.import_module("ai_edge_litert.interpreter")
import numpy
stdlib = os.path.dirname(os.__file__)
sources = [os.path.join(d, f) for d, _, fs in os.walk(stdlib) for f in fs if f.endswith(".py")]
# every standard-library module left in the image (sourceless .pyc and lib-dynload)
left = set()
for d, _, fs in os.walk(stdlib):
    for f in fs:
        rel = os.path.relpath(os.path.join(d, f), stdlib)
        if rel.startswith("lib-dynload" + os.sep):
            left.add(f.split(".")[0])
        elif rel.endswith(".pyc"):
            name = rel[:-4].replace(os.sep, ".")
            left.add(name[:-9] if name.endswith(".__init__") else name)
for name in sorted(left - {"__main__"}):
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = repr(e)
# what Python imports by computed name or from C (stdlib_keep.BY_NAME): exercised, not just imported
import socket, sysconfig
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.wait4(pid, 0)  # builds its rusage with `resource`
    socket.getaddrinfo("localhost", 80)  # encodes the host name with the idna codec (stringprep)
    sysconfig.get_config_vars()  # _sysconfigdata_*
    "naïve".encode("punycode"), b"\\x41".decode("unicode_escape")
except BaseException as e:
    failed["by name"] = repr(e)
import numpy.core.numeric, PIL.Image  # json.dumps, as os and posixpath are frozen into python3.11
columns = [any(c is not None for p in f.__code__.co_positions() for c in p[2:])
           for f in (json.dumps, numpy.core.numeric.ones, PIL.Image.open)]
print(json.dumps({"failed": failed, "numpy": numpy.__file__, "numpy_version": numpy.__version__,
                  "stdlib_sources": len(sources), "stdlib_left": len(left), "modules": len(sys.modules),
                  "stdlib_docstrings": json.dumps.__doc__ is not None, "column_tables": columns}))
'''

FEATURE_MODULES = {"mlfn_runtime.grpc_service", "mlfn_runtime.h2c", "mlfn_runtime.h2c_frames", "mlfn_runtime.oip_grpc",
                   "mlfn_runtime.jwt_verify"}
FEATURE_PACKAGES = ("google", "h2", "hpack", "hyperframe", "cryptography")


@pytest.mark.docker
def test_every_module_the_runtime_can_reach_imports_in_the_image(digits_image, docker_client):
    out = docker_client.containers.run(
        digits_image.image, ["python3", "-c", IMPORT_ALL], remove=True, read_only=True, tmpfs={"/tmp": ""},
        labels={"dev.mlfn.test": "build"})
    report = json.loads(out.decode().strip().splitlines()[-1])
    # modules of features this function does not use need packages its image does not carry
    # (serving.grpc: h2 and protobuf; auth.jwt: cryptography); nothing else may fail
    missing_feature = [m for m, e in report["failed"].items()
                       if m in FEATURE_MODULES and any(f"'{p}'" in e for p in FEATURE_PACKAGES)]
    assert {m: e for m, e in report["failed"].items() if m not in missing_feature} == {}
    assert report["modules"] > 300  # the walk really imported the packages
    base = docker_client.images.get(digits_image.labels.get("org.opencontainers.image.base.name") or "mlfn-base:3.11")
    provided = python_packages(base.labels)
    if provided.get("numpy"):  # mlfn's own base: numpy is Debian's, sourceless stdlib
        assert report["numpy"].startswith("/usr/lib/python3/dist-packages/numpy/")
        assert report["numpy_version"] == provided["numpy"]
        assert report["stdlib_sources"] == 0
        assert 200 < report["stdlib_left"] < 400  # pruned to what the runtime can reach (stdlib_keep.py)
        assert report["stdlib_docstrings"] is False  # compiled as -OO
        deps = next(layer for layer in digits_image.layers if layer["name"] == "deps")
        assert "numpy" not in deps["packages"] and {"ai_edge_litert", "PIL"} <= set(deps["packages"])
    # library bytecode without column tables (slim.compile_sourceless): stdlib, numpy, Pillow
    assert report["column_tables"] == [not provided.get("numpy"), False, False]  # a foreign base: its own stdlib


@pytest.mark.docker
def test_the_slim_image_answers_right_under_a_read_only_root(digits_image, digits_project):
    import base64

    import requests

    from tests.image.conftest import running

    png = (digits_project / "inputs" / "digit-7.png").read_bytes()
    with running(digits_image.image, read_only=True, wait="/v2/health/ready") as url:
        assert requests.post(url + "/init", json={"value": {"name": "digits", "env": {}}}, timeout=30).ok
        r = requests.post(url + "/run", json={"value": {"image": base64.b64encode(png).decode()}}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "7"


@pytest.mark.docker
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="reads the image's Python 3.11 bytecode")
def test_no_stdlib_module_the_image_code_reaches_is_pruned(digits_image, docker_client, tmp_path):
    """modulefinder over the image's own trees (runtime, Debian's numpy, the deps; plus the
    feature packages h2/protobuf/cryptography as installed beside mlfn, which images with
    serving.grpc or auth.jwt carry): every stdlib module it reaches and cannot find in the
    image must be one the base left out before issue 17's pruning (keeps() says kept)."""
    import importlib.util
    import io
    import shutil
    import tarfile

    from mlfn.image.stdlib_keep import stdlib_finder

    container = docker_client.containers.create(digits_image.image, labels={"dev.mlfn.test": "build"})
    try:
        for folder in ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages", "/opt/mlfn"):
            stream, _ = container.get_archive(folder)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                tar.extractall(tmp_path / folder.strip("/").replace("/", "_"), filter="data")
    finally:
        container.remove(force=True)
    builtins = docker_client.containers.run(
        digits_image.image, ["python3", "-c", "import sys; print(*sys.builtin_module_names)"], remove=True,
        labels={"dev.mlfn.test": "build"}).decode().split()
    for name in ("h2", "hpack", "hyperframe", "google.protobuf", "cryptography", "cffi"):
        spec = importlib.util.find_spec(name)  # copied: the rest of this site-packages is no image's
        if spec and spec.submodule_search_locations:
            shutil.copytree(spec.submodule_search_locations[0], tmp_path.joinpath("features", *name.split(".")),
                            ignore=shutil.ignore_patterns("__pycache__"))
    trees = [tmp_path / "opt_mlfn/mlfn/runtime", tmp_path / "opt_mlfn/mlfn/deps",
             tmp_path / "usr_lib_python3_dist-packages/dist-packages", tmp_path / "features"]
    finder = stdlib_finder(str(tmp_path / "usr_lib_python3.11/python3.11"), trees)
    pruned = [name for name in sorted(finder.badmodules) if name not in builtins and _pruned_by_stdlib_keep(name)]
    assert finder.modules and len(finder.modules) > 300
    assert pruned == [], f"reached but pruned (regenerate stdlib_keep.REACHABLE): {pruned}"


def _pruned_by_stdlib_keep(name: str) -> bool:
    """True when `name` is a stdlib module (of this Python 3.11) that stdlib_keep drops by
    mistake: not one it leaves out on purpose (LEFT_OUT), nor one the base never carried
    (its PRUNE lists, Windows-only modules)."""
    import fnmatch
    import importlib.util
    import sysconfig
    from pathlib import Path

    from mlfn.image.base_image import PRUNE, PRUNE_GLOBS
    from mlfn.image.stdlib_keep import LEFT_OUT, keeps

    if name.split(".")[0] not in sys.stdlib_module_names or keeps(name) or name in LEFT_OUT:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # `from package import attribute`, not a module
        return False
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    origin = Path(spec.origin) if spec and spec.origin and spec.origin not in ("built-in", "frozen") else None
    if origin is None or stdlib not in origin.parents or "site-packages" in origin.parts:
        return False  # built in, Windows-only, or shimmed by a package (setuptools' distutils)
    rel = "usr/lib/python3.11/" + origin.relative_to(stdlib).as_posix()
    return not any(fnmatch.fnmatchcase(rel, pattern) or rel.startswith(pattern + "/") or fnmatch.fnmatchcase(
        rel.rsplit(".", 1)[0] + ".py", pattern) for pattern in [*PRUNE, *PRUNE_GLOBS])


def test_stdlib_keep_keeps_what_the_runtime_reaches_and_prunes_the_rest(tmp_path):
    from mlfn.image.stdlib_keep import keeps, module_name, prune_stdlib

    assert [keeps(m) for m in ("json", "http.server", "email.parser", "encodings.cp1252", "resource", "zoneinfo")] == [
        True] * 6
    assert [keeps(m) for m in ("asyncio", "pdb", "smtplib", "encodings.shift_jis", "_codecs_jp", "ssl")] == [False] * 6
    assert module_name("email/parser.pyc") == "email.parser" and module_name("json/__init__.pyc") == "json"
    assert module_name("lib-dynload/_json.cpython-311-x86_64-linux-gnu.so") == "_json"
    for rel in ("json/__init__.pyc", "json/decoder.pyc", "asyncio/__init__.pyc", "asyncio/events.pyc", "pdb.pyc",
                "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so", "lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so",
                "LICENSE.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * 10)
    assert prune_stdlib(tmp_path) == 50
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["json", "json/__init__.pyc", "json/decoder.pyc", "lib-dynload",
                    "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so"]


def test_lapack_stays_whole_without_the_archive_and_the_dev_files_go(tmp_path):
    from mlfn.image.slim import LAPACK, LAPACK_DEV, subset_lapack

    (tmp_path / LAPACK).parent.mkdir(parents=True)
    (tmp_path / LAPACK).write_bytes(b"\x7fELF full lapack")
    for rel in LAPACK_DEV[1:3]:  # liblapack.a and the liblapack.so dev link; no PIC archive
        (tmp_path / rel).write_bytes(b"dev")
    said = []
    assert subset_lapack(tmp_path, said.append) == 0
    assert (tmp_path / LAPACK).read_bytes() == b"\x7fELF full lapack"
    assert not any((tmp_path / rel).exists() for rel in LAPACK_DEV)
    assert said and "full LAPACK" in said[0]


def test_a_custom_file_importing_a_pruned_stdlib_module_is_named(tmp_path):
    from mlfn.image.stdlib_keep import pruned_imports

    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "post.py").write_text(
        "import json, asyncio\nimport xml.dom.minidom\nfrom email import parser\nfrom . import sibling\n"
        "import numpy, os.path, logging.handlers\n\ndef f(x):\n    import smtplib\n    return x\n")
    (tmp_path / "broken.py").write_text("def (:\n")
    assert pruned_imports(tmp_path) == [("steps/post.py", m) for m in (
        "asyncio", "logging.handlers", "smtplib", "xml.dom.minidom")]


def test_numpy_edits_need_the_exact_numpy_they_were_written_for(tmp_path):
    from mlfn.errors import BuildError

    init = tmp_path / "__init__.py"
    known = "".join(old for old, _ in NUMPY_INIT_EDITS)
    init.write_text(known)
    lazy_numpy_submodules(init)
    assert "from . import random" not in init.read_text() and "import_module('numpy.' + attr)" in init.read_text()
    init.write_text(known.replace("    from . import ma\n", ""))  # another numpy: the build stops, file untouched
    with pytest.raises(BuildError, match="__init__.py does not hold `from . import fft"):
        lazy_numpy_submodules(init)
    assert init.read_text() == known.replace("    from . import ma\n", "")


LAZY_NUMPY = """
import json, sys
import mlfn_runtime.http_server, mlfn_runtime.function, ai_edge_litert.interpreter, PIL.Image
import numpy as np
at_start = [m for m in %r if "numpy." + m in sys.modules]
from numpy import ma
star = {}
exec("from numpy import *", star)
print(json.dumps({"at_start": at_start, "random": int(np.random.default_rng(0).integers(10, 11)),
                  "ma": int(ma.masked_array([1, 2], [0, 1]).sum()), "fft": np.fft.fft([1, 0]).real.tolist(),
                  "polynomial": float(np.polynomial.Polynomial([1, 2])(2)),
                  "ctypeslib": np.ctypeslib.as_ctypes_type(np.int32).__name__,
                  "star": all(star[m] is getattr(np, m) for m in ("fft", "random", "ctypeslib", "ma")),
                  "dir": sorted(set(%r) - set(dir(np)))}))
""" % (NUMPY_LAZY, NUMPY_LAZY)


@pytest.mark.docker
def test_the_base_numpy_imports_its_unused_subpackages_on_first_use(digits_image, docker_client):
    base = docker_client.images.get(digits_image.labels.get("org.opencontainers.image.base.name") or "mlfn-base:3.11")
    if not python_packages(base.labels).get("numpy"):
        pytest.skip("a foreign base: its numpy is not mlfn's")
    out = docker_client.containers.run(digits_image.image, ["python3", "-c", LAZY_NUMPY], remove=True,
                                       read_only=True, labels={"dev.mlfn.test": "build"})
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report == {"at_start": [], "random": 10, "ma": 1, "fft": [1.0, 1.0], "polynomial": 5.0,
                      "ctypeslib": "c_int", "star": True, "dir": []}
