"""Smaller image trees, same behaviour: sourceless bytecode, stripped shared objects, and
the size report per package that `mlfn build --output json` shows.

Sourceless bytecode: each module's `.pyc` (unchecked-hash, deterministic, without column
tables) is written in its legacy place beside the source (`os.pyc` next to `os.py`, as
`compileall -b` does) and the `.py` is then removed. CPython imports such a module with its sourceless loader
(and finds its standard library by `os.pyc`), so the image ships one copy of each module
instead of two. Tracebacks keep file names and line numbers but show no source lines.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

DIST_PACKAGES = "usr/lib/python3/dist-packages"  # Debian's site of the base image's numpy

# Debian's python3-numpy (in the base image), pruned of what a function never imports:
# the test suites, the build and Fortran tooling, C headers and static libraries, type
# stubs, the SIMD test module, and numpy.testing (it needs unittest, which the base
# does not ship). Verified by tests/image/test_image_slim.py (every module left imports).
NUMPY_PRUNE = [
    "tests", "*/tests", "conftest.py", "setup.py", "*/setup.py", "*.pyi", "*.pxd", "*/py.typed", "*/LICENSE.txt",
    # (core/_multiarray_tests stays: numpy 1.24's `import numpy` documents a function of it)
    "core/include", "core/lib", "core/_simd.*", "core/_rational_tests.*",
    "core/_umath_tests.*", "core/_operand_flag_tests.*", "core/_struct_ufunc_tests.*", "f2py", "distutils", "doc", "_pyinstaller", "testing",
    "typing/mypy_plugin.py", "random/lib",
    # build-time code generators and test helpers, and a module for type checkers only
    "core/cversions.py", "core/generate_numpy_api.py", "core/setup_common.py", "core/umath_tests.py",
    "ma/testutils.py", "ma/timer_comparison.py", "_typing/_extended_precision.py", "random/_examples", "random/*.h",
]


def compile_sourceless(path: Path, ddir: str, optimize: int = 0) -> None:
    """Replace every compilable `X.py` under `path` by `X.pyc` (unchecked-hash), in place.

    Runs `python -I -m compileall -b` in a fresh process (marshal output depends on
    reference counts, so a busy process is not reproducible). Needs Python 3.11 (the
    image's bytecode version); on another version the tree is left as it is.
    optimize=2 compiles as `python -OO` does: no docstrings, no asserts.

    `-X no_debug_ranges`: the bytecode carries line numbers but not the column
    positions a traceback underlines with ^^^ (PEP 657). Those tables hardly compress:
    numpy's bytecode gzips 28% smaller without them."""
    if sys.version_info[:2] != (3, 11) or not Path(path).is_dir():
        return
    cmd = [sys.executable, "-X", "no_debug_ranges", "-I", "-m", "compileall", "-b", "-q", "-q", "-j", "1", "-d", ddir, "-o", str(optimize),
           "--invalidation-mode", "unchecked-hash", str(path)]
    env = {"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1):  # 1: some file did not compile (py2 leftovers); keep its source
        from mlfn.errors import BuildError

        raise BuildError(f"Precompiling {path} failed: {proc.stderr.strip()[-300:]}")
    for source in sorted(Path(path).rglob("*.py")):
        if source.with_suffix(".pyc").is_file():
            source.unlink()
    for cache in sorted(Path(path).rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)


def strip_shared_objects(files: Iterable[Path]) -> int:
    """`strip --strip-unneeded` each file (when binutils is installed); return bytes saved."""
    strip = shutil.which("strip")
    if not strip:
        return 0
    saved = 0
    for so in sorted(files):
        if so.is_symlink() or not so.is_file():
            continue
        before = so.stat().st_size
        if subprocess.run([strip, "--strip-unneeded", str(so)], capture_output=True).returncode == 0:
            saved += before - so.stat().st_size
    return saved


def prune(root: Path, patterns: Iterable[str]) -> int:
    """Delete what matches the fnmatch `patterns` (POSIX paths relative to `root`); bytes removed."""
    import fnmatch

    patterns = list(patterns)
    removed = 0
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
        if not p.exists() and not p.is_symlink():
            continue
        rel = p.relative_to(root).as_posix()
        if p.name == "__pycache__" or any(fnmatch.fnmatchcase(rel, pat) for pat in patterns):
            removed += tree_size(p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    return removed


def tree_size(p: Path) -> int:
    """Bytes of a file or of the regular files under a folder (symlinks count as their own size)."""
    if p.is_symlink() or p.is_file():
        return p.lstat().st_size
    return sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() or f.is_symlink())


def package_sizes(site: Path) -> dict:
    """{import name: bytes} of a `pip --target` tree, largest first. A wheel's vendored
    libraries (`numpy.libs`, `pillow.libs`) and its metadata (`*.dist-info`) count for
    the package they come with."""
    sizes: dict = {}
    for entry in sorted(Path(site).iterdir()):
        name = entry.name
        if name.endswith((".libs", ".dist-info")):
            name = name.rsplit(".", 1)[0].split("-")[0]
        elif entry.is_file():
            name = name.split(".")[0]
        name = DIST_IMPORT_NAMES.get(name.lower(), name)
        sizes[name] = sizes.get(name, 0) + tree_size(entry)
    return dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))


# distribution (or vendored-libraries folder) name -> import name, where they differ
DIST_IMPORT_NAMES = {"pillow": "PIL"}


def slim_numpy(root: Path) -> Optional[str]:
    """Prune Debian's numpy to what a function imports and link the reference BLAS and
    LAPACK where numpy looks for them (update-alternatives, which would do it, never ran).
    Returns numpy's version, or None when the root has no numpy."""
    numpy = root / DIST_PACKAGES / "numpy"
    if not numpy.is_dir():
        return None
    prune(numpy, NUMPY_PRUNE)
    lazy_numpy_submodules(numpy / "__init__.py")
    libdir = root / "usr/lib/x86_64-linux-gnu"
    for name in ("blas/libblas.so.3", "lapack/liblapack.so.3"):
        link = libdir / Path(name).name
        if (libdir / name).exists() and not link.exists():
            link.symlink_to(name)
    for info in sorted((root / DIST_PACKAGES).glob("numpy-*.egg-info")):
        for line in (info / "PKG-INFO").read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


# numpy 1.24's `import numpy` imports these subpackages although neither LiteRT nor the
# runtime uses them (about 15 ms of a cold start); the base's numpy imports them on first
# use instead, through the module `__getattr__` numpy already has (PEP 562), so `np.random`,
# `from numpy import ma` and `from numpy import *` work as before.
NUMPY_LAZY = ("fft", "polynomial", "random", "ctypeslib", "ma")
# (the exact text of Debian's numpy 1.24.2 numpy/__init__.py, what replaces it)
NUMPY_INIT_EDITS = (
    ("".join(f"    from . import {name}\n" for name in NUMPY_LAZY),
     f"    # {', '.join(NUMPY_LAZY)}: imported on first use by __getattr__ (mlfn base image)\n"),
    ("    def __getattr__(attr):\n",
     "    def __getattr__(attr):\n"
     f"        if attr in {NUMPY_LAZY!r}:\n"
     "            import importlib\n"
     "            return importlib.import_module('numpy.' + attr)\n"),
    ("        public_symbols = globals().keys() | {'Tester', 'testing'}\n",
     f"        public_symbols = globals().keys() | {{'Tester', 'testing', {', '.join(map(repr, NUMPY_LAZY))}}}\n"),
)


def lazy_numpy_submodules(init: Path) -> None:
    """Make numpy's `__init__.py` import NUMPY_LAZY on first use. Each edit must find its
    text exactly once; otherwise the base build stops (a numpy other than Debian's 1.24)."""
    text = init.read_text(encoding="utf-8")
    for old, new in NUMPY_INIT_EDITS:
        if text.count(old) != 1:
            from mlfn.errors import BuildError

            first = old.strip().splitlines()[0]
            raise BuildError(f"{init} does not hold `{first}` exactly once: it is not the numpy 1.24 the base "
                             f"build knows, so its submodules cannot be made lazy (mlfn.image.slim.NUMPY_INIT_EDITS).")
        text = text.replace(old, new)
    init.write_text(text, encoding="utf-8")


LIBDIR = "usr/lib/x86_64-linux-gnu"
LAPACK = f"{LIBDIR}/lapack/liblapack.so.3.11.0"  # Debian's reference LAPACK (liblapack3), 7.3 MB
LAPACK_PIC = f"{LIBDIR}/liblapack_pic.a"  # the same routines as a PIC archive (liblapack-dev)
# liblapack-dev and libblas-dev files, needed only while linking the LAPACK subset
LAPACK_DEV = [LAPACK_PIC, f"{LIBDIR}/lapack/liblapack.a", f"{LIBDIR}/lapack/liblapack.so", f"{LIBDIR}/blas/libblas.a",
              f"{LIBDIR}/blas/libblas.so", f"{LIBDIR}/pkgconfig", "usr/include"]


def subset_lapack(root: Path, say=lambda m: None) -> int:
    """Replace Debian's LAPACK by one holding only what numpy links (bytes saved).

    numpy.linalg (imported by `import numpy`) calls 31 LAPACK drivers (dgesv, dgeev,
    dgesdd, ... in four precisions); `ld` pulls them and every routine they call from
    liblapack-dev's PIC archive into a library of the same soname (7.3 -> 1.2 MB), so every
    numpy.linalg function still works. Needs binutils (`ld`, `nm`); without them, or
    without the archive, the full LAPACK stays. The -dev files go either way."""
    lapack, archive = root / LAPACK, root / LAPACK_PIC
    ld, nm = shutil.which("ld"), shutil.which("nm")
    saved = 0
    if lapack.is_file() and archive.is_file() and ld and nm:
        users = sorted((root / DIST_PACKAGES / "numpy/linalg").glob("*.so"))
        defined = set(_dynamic_symbols(nm, [lapack], "--defined-only"))
        needed = sorted(defined & set(_dynamic_symbols(nm, users, "--undefined-only")))
        out = lapack.with_name("liblapack.subset")
        libdirs = [f"-L{root / d}" for d in (LIBDIR, f"{LIBDIR}/blas", "lib/x86_64-linux-gnu")]
        cmd = [ld, "-shared", "--strip-all", "-soname", "liblapack.so.3", "-o", str(out),
               *(f"--undefined={sym}" for sym in needed), str(archive), *libdirs, "--as-needed",
               "-l:libblas.so.3", "-l:libgfortran.so.5", "-l:libm.so.6", "-l:libc.so.6"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        missing = set(needed) - set(_dynamic_symbols(nm, [out], "--defined-only")) if proc.returncode == 0 else needed
        if needed and not missing:
            size = out.stat().st_size
            saved = lapack.stat().st_size - size
            os.replace(out, lapack)
            say(f"Linked the {len(needed)} LAPACK drivers numpy calls into liblapack.so.3 ({size / 1e6:.1f} MB)")
        else:
            out.unlink(missing_ok=True)
            say(f"Keeping the full LAPACK (linking the subset failed: {proc.stderr.strip()[-200:] or 'symbols missing'})")
    elif lapack.is_file():
        why = "binutils' ld and nm are needed to link" if archive.is_file() else "no liblapack-dev archive to link"
        say(f"Keeping the full LAPACK ({why} the subset numpy uses)")
    for rel in LAPACK_DEV:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    return saved


def _dynamic_symbols(nm: str, files: list, which: str) -> list:
    out = subprocess.run([nm, "-D", which, *map(str, files)], capture_output=True, text=True).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":")]


# What the size report groups a base's root file system into (first match wins).
SIZE_GROUPS = [
    ("python", ("usr/bin/python3.11",)),
    ("stdlib", ("usr/lib/python3.11",)),
    ("numpy", (DIST_PACKAGES,)),
    ("blas-lapack", ("usr/lib/x86_64-linux-gnu/blas", "usr/lib/x86_64-linux-gnu/lapack",
                     "usr/lib/x86_64-linux-gnu/libgfortran", "usr/lib/x86_64-linux-gnu/libquadmath")),
    ("libc", ("lib/x86_64-linux-gnu/libc.", "lib/x86_64-linux-gnu/libm.", "lib/x86_64-linux-gnu/ld-",
              "usr/lib/x86_64-linux-gnu/libc.", "usr/lib/x86_64-linux-gnu/libm.", "usr/lib/x86_64-linux-gnu/ld-")),
    ("libstdc++", ("usr/lib/x86_64-linux-gnu/libstdc++",)),
]


def rootfs_sizes(root: Path) -> dict:
    """{group: bytes} of a base root file system (SIZE_GROUPS, the rest as "other")."""
    sizes = {name: 0 for name, _ in SIZE_GROUPS}
    sizes["other"] = 0
    for p in root.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(root).as_posix()
        group = next((name for name, prefixes in SIZE_GROUPS if rel.startswith(prefixes)), "other")
        sizes[group] += tree_size(p)
    return sizes


def add_package_sizes(layers: list, context_dir: Path, base_labels: dict) -> list:
    """Give the base and deps entries of a build's `layers` a `packages` map ({name: bytes}):
    the base's from its `dev.mlfn.base.sizes` label (mlfn's base only), the dependency
    layer's from the context's deps folder. Returns `layers` (changed in place)."""
    text = (base_labels or {}).get("dev.mlfn.base.sizes") or ""
    base_sizes = {k: int(v) for k, _, v in (item.partition("=") for item in text.split()) if v.isdigit()}
    for layer in layers:
        if layer.get("name") == "base" and base_sizes:
            layer["packages"] = base_sizes
        elif layer.get("name") == "deps" and (Path(context_dir) / "deps").is_dir():
            layer["packages"] = package_sizes(Path(context_dir) / "deps")
    return layers
