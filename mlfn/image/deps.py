"""The dependency layer (`/opt/mlfn/deps`): numpy, Pillow and the LiteRT interpreter,
installed on the host with `pip install --target` for CPython 3.11 manylinux x86_64.

The image build itself never touches the network: wheels are resolved here, once per
requirement set, and cached under `<cache>/deps/<key>/site`. Versions are pinned to the
ones installed next to mlfn when present, so the image runs the same numpy/LiteRT the
build side tested with.

numpy is left out when the base image provides it (mlfn's base carries Debian's numpy,
see base_image.py): `requirements_for(cfg, base_packages)`.

Then the tree is pruned of what a function never uses (console scripts, tests, C
headers, type stubs, LiteRT's WebGPU accelerator and its AOT compiler tools, Pillow's
AVIF codec, ...), the shared objects of LiteRT and Pillow are stripped of unneeded
symbols, and the modules are compiled to sourceless unchecked-hash .pyc files
(deterministic; never re-validated at start-up; see slim.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Optional

from mlfn.image.base_image import cache_dir
from mlfn.image.slim import compile_sourceless, prune, strip_shared_objects
from mlfn.errors import BuildError

PYTHON_VERSION = "3.11"
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64"]
DEPS_FORMAT = 7  # bump when pruning/compiling changes, to invalidate caches

# Relative paths (fnmatch patterns, matched against the POSIX path in the target dir)
# removed after install. Verified: the interpreter still loads and runs a model.
PRUNE_PATTERNS = [
    "bin", "bin/*",
    "*/tests", "*/tests/*",
    "*.pyi", "*.pxd", "*.h", "*.c", "*.pyx", "*/py.typed",
    "numpy/_core/include", "numpy/_core/include/*", "numpy/f2py", "numpy/f2py/*",
    "numpy/_pyinstaller", "numpy/_pyinstaller/*", "numpy/doc", "numpy/doc/*",
    "numpy/distutils", "numpy/distutils/*", "numpy/_core/_simd.*", "numpy/_core/_*_tests.*",
    "numpy/_core/_rational_tests.*", "numpy/_core/_umath_tests.*", "numpy/_core/_operand_flag_tests.*",
    "numpy/_core/_struct_ufunc_tests.*", "numpy/_core/_multiarray_tests.*", "numpy/conftest.py",
    # LiteRT: only the interpreter is used (libpywrap_litert_common.so + the Python wrapper);
    # the WebGPU accelerator, the CompiledModel runtime (libLiteRt.so), the NPU vendor
    # compiler plugins, the AOT tools, the converter protos and the schema bindings are not.
    "ai_edge_litert/libLiteRtWebGpuAccelerator.so", "ai_edge_litert/libLiteRt.so",
    "ai_edge_litert/aot", "ai_edge_litert/aot/*", "ai_edge_litert/tools", "ai_edge_litert/tools/*",
    "ai_edge_litert/vendors", "ai_edge_litert/vendors/*", "ai_edge_litert/tflite/converter",
    "ai_edge_litert/tflite/converter/*", "ai_edge_litert/*_pb2.py", "ai_edge_litert/schema_py_generated.py",
    # Pillow: fonts (FreeType/HarfBuzz) and colour management are never used to decode inputs
    "PIL/_imagingft.*", "PIL/_imagingcms.*", "pillow.libs/libfreetype*", "pillow.libs/libharfbuzz*",
    # nor AVIF (5 MB of AV1 codecs; Debian's and most Pillow builds read no AVIF either)
    "PIL/_avif.*", "pillow.libs/libavif*", "pillow.libs/libaom*", "pillow.libs/libdav1d*",
    "pillow.libs/libbrotli*", "pillow.libs/liblcms2*", "pillow.libs/libpng16*",
    "*.dist-info/RECORD", "*.dist-info/INSTALLER", "*.dist-info/REQUESTED", "*.dist-info/direct_url.json",
    "PIL/ImageTk.py", "PIL/_imagingtk*.so",
    # modules that cannot import in any function image: Tk (not in the base), olefile
    # (not installed: Pillow skips these formats), and a module for type checkers only
    "PIL/_tkinter_finder.py", "PIL/FpxImagePlugin.py", "PIL/MicImagePlugin.py", "PIL/_typing.py",
]


def _host_version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def image_steps() -> frozenset:
    """The runtime's steps that work on Pillow images (the ones that import Pillow)."""
    from mlfn_runtime.pipeline import STEPS  # installed with mlfn, always

    return frozenset(name for name, cls in STEPS.items() if cls.image)


def pipeline_decodes_images(steps_lists: Iterable[list]) -> bool:
    """True when a pre-processing pipeline holds a step that needs Pillow in the image."""
    image = image_steps()
    for steps in steps_lists:
        for step in steps or []:
            name = step if isinstance(step, str) else next(iter(step)) if isinstance(step, dict) and step else ""
            if name in image:
                return True
    return False


def requirements_for(cfg, base_packages: Mapping[str, str] = MappingProxyType({})) -> list[str]:
    """The pinned requirement set of a function's image (sorted, stable).

    base_packages: {distribution: version} the base image already provides (its
    `dev.mlfn.base.python-packages` label; base_image.python_packages); numpy is left
    out when the base has it (Debian's 1.24 satisfies LiteRT's numpy>=1.23.2 and
    tflite-runtime's numpy<2)."""
    steps = [cfg.pipeline.pre] + [m.pre for m in cfg.models if m.pre is not None]
    need_pillow = pipeline_decodes_images(steps)
    reqs = []
    if cfg.build.runtime == "tflite-runtime":
        reqs += ["tflite-runtime==2.14.*"] + ([] if "numpy" in base_packages else ["numpy<2"])
    else:
        v = _host_version("ai-edge-litert")
        reqs.append(f"ai-edge-litert=={v}" if v else "ai-edge-litert")
        v = _host_version("numpy")
        if "numpy" not in base_packages:
            reqs.append(f"numpy=={v}" if v and int(v.split(".")[0]) >= 2 else "numpy>=2")
    if need_pillow:
        v = _host_version("pillow")
        reqs.append(f"pillow=={v}" if v else "pillow")
    if cfg.auth.enabled and cfg.auth.jwt:  # JWT signatures (mlfn_runtime.jwt_verify); API keys need nothing
        reqs += [f"{d}=={_host_version(d)}" if _host_version(d) else d for d in ("cryptography", "cffi")]
    if cfg.serving.grpc:  # HTTP/2 (h2c, pure Python) and protobuf for the OIP gRPC service
        reqs += [f"{d}=={v}" if (v := _host_version(d)) else d for d in ("h2", "hpack", "hyperframe", "protobuf")]
    return sorted(reqs, key=str.lower)


def deps_key(requirements: list[str]) -> str:
    data = {"reqs": sorted(requirements), "python": PYTHON_VERSION, "platforms": PLATFORMS, "format": DEPS_FORMAT}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def ensure_deps(requirements: list[str], progress: Optional[Callable[[str], None]] = None,
                cache: Optional[Path] = None) -> Path:
    """Install `requirements` for the image once; return the cached site folder."""
    say = progress or (lambda m: None)
    root = (cache or cache_dir()) / "deps" / deps_key(requirements)
    site = root / "site"
    if (root / "done.json").exists() and site.is_dir():
        return site
    tmp = root / "site.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-compile", "--no-deps", "--target", str(tmp), "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp311"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    cmd += requirements
    say(f"Installing {' '.join(requirements)} for the image (pip --target, cached)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("ERROR")] or proc.stderr.strip().splitlines()[-1:]
        detail = lines[0] if lines else "unknown error"
        if "No space left" in proc.stderr:
            raise BuildError(f"The disk holding {root} is full while installing the image dependencies.")
        raise BuildError(f"Installing the image dependencies ({', '.join(requirements)}) failed: {detail}")
    removed = prune(tmp, PRUNE_PATTERNS)
    removed += strip_shared_objects(f for pkg in STRIP_PACKAGES for f in (tmp / pkg).glob("*.so*"))
    compile_sourceless(tmp, ddir="/opt/mlfn/deps")
    if site.exists():
        shutil.rmtree(site)
    os.replace(tmp, site)
    (root / "done.json").write_text(json.dumps({"requirements": requirements, "pruned_bytes": removed}))
    return site


# Folders whose shared objects are stripped of unneeded symbols (Pillow's _imaging: 3.5
# -> 0.8 MB). Not numpy's: its wheel's OpenBLAS is stripped already, and patchelf-edited
# files have been corrupted by older binutils; these load and decode after strip
# (binutils 2.40; the vendored pillow.libs do not get smaller; checked by tests/image/test_image_slim.py in the built image).
STRIP_PACKAGES = ("ai_edge_litert", "tflite_runtime", "PIL")
