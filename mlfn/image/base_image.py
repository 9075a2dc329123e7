"""`mlfn base build`: a distroless-style Python 3.11 base image from Debian packages.

How: mmdebstrap's `extract` variant unpacks python3.11-minimal, libpython3.11-stdlib,
libstdc++6, libgcc-s1, zlib1g and python3-numpy (plus their library dependencies) into a
directory, running no maintainer scripts; mlfn then removes what a function never uses
(dpkg, apt state, tar, docs, man pages, locales, the test suite, numpy's tests and build
tools, ...), adds `/usr/bin/python3`, `/etc/passwd` with a non-root user 65532, the BLAS
and LAPACK links update-alternatives would have made, compiles the standard library and
numpy to sourceless unchecked-hash .pyc files (one copy of each module; no recompilation
under a read-only root), keeps only the stdlib modules a function can reach (stdlib_keep.py)
and the LAPACK routines numpy calls (slim.subset_lapack), writes a deterministic root file-system tar, and imports it
into Docker with `docker import` (ENV, USER, CMD as changes).

numpy comes from Debian (1.24, linked to the reference BLAS/LAPACK, about 20 MB with
them) rather than from the wheel (about 50 MB with its bundled OpenBLAS, and 137 ms of
OpenBLAS start-up on every cold start); the label `dev.mlfn.base.python-packages`
names it, so the dependency layer of a function on this base leaves numpy out.

The same tar and config are kept under the cache (`<cache>/base/<tag>/`) so the
daemonless builder (`mlfn.image.oci`) can use the base without a Docker daemon.

The `extract` variant was chosen over `essential`/`apt` + removal hooks: it starts from
nothing, so nothing has to be remembered to remove (measured: 3.3 s download+unpack,
about 45 MB before pruning versus about 200 MB for a `apt` variant bootstrap).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mlfn.image.slim import DIST_PACKAGES, compile_sourceless, rootfs_sizes, slim_numpy, subset_lapack
from mlfn.image.stdlib_keep import prune_stdlib
from mlfn.image.tarball import open_tar, sha256_file, write_tree
from mlfn.errors import BuildError

DEFAULT_BASE_TAG = "mlfn-base:3.11"
NONROOT_UID = 65532
SUITE = "bookworm"
# liblapack-dev: its PIC archive, from which numpy's LAPACK subset is linked (slim.subset_lapack)
PACKAGES = ["python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "zlib1g", "python3-numpy", "liblapack-dev"]
# Bumped when the base's layout changes: a cached base of another format is rebuilt.
BASE_FORMAT = 4
FORMAT_LABEL = "dev.mlfn.base.format"
PACKAGES_LABEL = "dev.mlfn.base.python-packages"  # "numpy==1.24.2": what the dependency layer can leave out
SIZES_LABEL = "dev.mlfn.base.sizes"  # "python=BYTES stdlib=BYTES numpy=BYTES ...", see rootfs_sizes

DEBUG_PACKAGES = ["busybox"]
DEFAULT_SOURCES = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "HOME": "/home/nonroot",
}

# Paths (relative to the root) removed after extraction: package-manager state,
# documentation, tools a function never runs, and stdlib parts nobody imports at run time.
PRUNE = [
    "bin", "sbin", "usr/sbin", "usr/games", "usr/include", "usr/local/games",
    "etc/apt", "etc/dpkg", "etc/alternatives", "etc/cron.daily", "etc/logrotate.d",
    "etc/gss", "etc/rmt", "etc/fstab", "etc/hostname", "etc/resolv.conf",
    "var/lib/dpkg", "var/lib/apt", "var/cache", "var/log", "var/backups", "var/mail",
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "usr/share/bug", "usr/share/gdb", "usr/share/dpkg", "usr/share/polkit-1", "usr/share/gcc",
    "usr/share/readline", "usr/share/common-licenses", "usr/share/menu", "usr/share/pixmaps",
    "usr/share/applications", "usr/share/binfmts", "usr/share/perl5", "usr/share/debconf",
    "usr/lib/x86_64-linux-gnu/gconv", "usr/libexec", "usr/lib/dpkg", "usr/lib/apt", "usr/lib/tar",
    "usr/lib/python3.11/test", "usr/lib/python3.11/idlelib", "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/lib2to3", "usr/lib/python3.11/pydoc_data", "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/turtledemo", "usr/lib/python3.11/turtle.py",
    "usr/lib/python3.11/config-3.11-x86_64-linux-gnu",
    # python3-numpy's own dependencies that nothing imports: setuptools' pkg_resources,
    # Debian's Python helper scripts
    "usr/lib/python3/dist-packages/pkg_resources", "usr/share/python3",
    "usr/lib/python3.11/distutils", "usr/lib/python3.11/_distutils_system_mod.py",
    # a second copy of numpy's core extension that python3-numpy ships outside sys.path
    "usr/lib/python3.11/dist-packages",

]
# Glob patterns (relative to the root) removed too: stdlib modules for terminals, NIS,
# Berkeley DB, SQLite and TLS, and the shared libraries only they load (measured: -15 MB).
# Without OpenSSL, hashlib uses CPython's built-in sha2/md5/blake2; a function that needs
# TLS (outgoing HTTPS) can use a full base such as python:3.11-slim (build.base_image).
PRUNE_GLOBS = [
    "usr/lib/python3.11/lib-dynload/_ssl.*", "usr/lib/python3.11/lib-dynload/_hashlib.*",
    "usr/lib/ssl", "usr/lib/x86_64-linux-gnu/engines-3", "usr/lib/x86_64-linux-gnu/ossl-modules",
    "usr/lib/python3.11/lib-dynload/_curses*", "usr/lib/python3.11/lib-dynload/_dbm*",
    "usr/lib/python3.11/lib-dynload/nis.*", "usr/lib/python3.11/lib-dynload/readline.*",
    "usr/lib/python3.11/lib-dynload/_sqlite3*", "usr/lib/python3.11/curses",
    # CPython's own test helpers and modules nobody serves a model with
    "usr/lib/python3.11/lib-dynload/_test*", "usr/lib/python3.11/lib-dynload/_ctypes_test*",
    "usr/lib/python3.11/lib-dynload/xxlimited*", "usr/lib/python3.11/lib-dynload/_xxtestfuzz*",
    "usr/lib/python3.11/lib-dynload/ossaudiodev*", "usr/lib/python3.11/lib-dynload/audioop*",
    "usr/lib/python3.11/unittest", "usr/lib/python3.11/xmlrpc", "usr/lib/python3.11/wsgiref",
    "usr/lib/python3.11/_pydecimal.py", "usr/lib/python3.11/pydoc.py", "usr/lib/python3.11/doctest.py",
    "usr/lib/python3.11/__phello__", "usr/lib/python3.11/venv",
    "usr/lib/python3.11/dbm", "usr/lib/python3.11/sqlite3",
    # PEP 594's dead batteries (deprecated, gone in Python 3.13) and the easter eggs
    *(f"usr/lib/python3.11/{m}.py" for m in (
        "aifc", "asynchat", "asyncore", "cgi", "cgitb", "chunk", "crypt", "imghdr", "mailcap", "nntplib",
        "pipes", "smtpd", "sndhdr", "sunau", "telnetlib", "uu", "xdrlib", "antigravity", "this", "__hello__")),
    "usr/lib/python3.11/lib-dynload/_crypt.*", "usr/lib/python3.11/lib-dynload/spwd.*",
] + [
    f"{d}/{lib}" for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
    for lib in ("libssl.so*", "libcrypto.so*", "libdb-5.3.so", "libsqlite3.so*", "libnsl.so*", "libtirpc.so*", "libgssapi_krb5.so*",
                "libkrb5.so*", "libk5crypto.so*", "libkrb5support.so*", "libcom_err.so*", "libkeyutils.so*",
                "libpanelw.so*", "libncursesw.so*", "libncurses.so*", "libtinfo.so*", "libreadline.so*",
                "libhistory.so*", "libmenuw.so*", "libformw.so*",
                # nothing left in the image links these (checked with readelf -d NEEDED over
                # every ELF file of the base and the deps layer): dpkg/tar/SELinux leftovers,
                # glibc's debugging and vector-math libraries, Kerberos plugins
                "libzstd.so*", "libpcre2-8.so*", "libselinux.so*", "libacl.so*", "libmd.so*", "libtic.so*",
                "libexpatw.so*", "libmvec.so*", "libc_malloc_debug.so*", "libmemusage.so", "libpcprofile.so",
                "libBrokenLocale.so*", "libthread_db.so*", "libnss_hesiod.so*", "libnss_compat.so*", "krb5",
                "libcrypt.so*")
]
# Executables kept in usr/bin (everything else there goes).
KEEP_BIN = {"python3.11"}


@dataclass
class BaseResult:
    """What `mlfn base build` made (or found)."""

    image: str
    image_id: Optional[str]  # None when only cached for the daemonless builder (--no-import)
    size_bytes: int
    built: bool  # False when the tag already existed and --force was not given
    debug_shell: bool = False
    rootfs_tar: Optional[str] = None  # cached root file system (for the daemonless builder)
    rootfs_sha256: Optional[str] = None
    packages: list = field(default_factory=list)
    seconds: float = 0.0
    python_packages: dict = field(default_factory=dict)  # {"numpy": "1.24.2"}: provided by the base


def cache_dir() -> Path:
    """mlfn's machine-wide cache: $MLFN_CACHE_DIR, else $XDG_CACHE_HOME/mlfn, else ~/.cache/mlfn."""
    env = os.environ.get("MLFN_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlfn"


def base_cache_dir(tag: str) -> Path:
    """Where the root file system tar and image config of base `tag` are kept."""
    return cache_dir() / "base" / re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


def docker_client():
    """A docker SDK client for the local engine, or a BuildError that says what to do."""
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a hard dependency
        raise BuildError("The 'docker' Python package is missing; pip install docker, or use --builder oci.") from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as e:  # docker.errors.DockerException and connection errors
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise BuildError(
            f"No Docker engine is reachable at {host} ({_short(e)}); start Docker, "
            "or build without a daemon using --builder oci."
        ) from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def sources_from_host() -> list[str]:
    """The bookworm lines of /etc/apt/sources.list(.d), as one-line `deb` entries."""
    lines: list[str] = []
    paths = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for p in paths:
        if not p.is_file() or not (p.name.endswith(".list") or p.name.endswith(".sources")):
            continue
        text = p.read_text(errors="replace")
        if p.name.endswith(".list"):
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("deb ") and "bookworm" in line:
                    lines.append(re.sub(r"\s*\[[^]]*\]", "", line))
        else:  # deb822
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        if suite.startswith("bookworm"):
                            lines.append(f"deb {uri} {suite} {fields.get('components', 'main')}")
    # only the Debian archive itself (no third-party repositories)
    lines = [ln for ln in lines if "debian" in ln.split()[1]]
    return lines or list(DEFAULT_SOURCES)


def image_exists(client, tag: str):
    import docker

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def build_base_image(
    tag: str = DEFAULT_BASE_TAG,
    *,
    debug_shell: bool = False,
    force: bool = False,
    docker_import: bool = True,
    sources: Optional[list] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> BaseResult:
    """Build (or reuse) the base image `tag` and keep its root file system in the cache.

    docker_import=False needs no Docker engine: the root file system and config stay in
    the cache only, which is all the daemonless builder (`--builder oci`) needs. A base
    of an older layout (BASE_FORMAT) is rebuilt even without `force`."""
    import time

    say = progress or (lambda m: None)
    t0 = time.monotonic()
    client = docker_client() if docker_import else None
    cache = base_cache_dir(tag)
    reused = None if force else _reuse(client, tag, cache, say)
    if reused is not None:
        reused.seconds = time.monotonic() - t0
        return reused
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed; run 'apt-get install mmdebstrap' to build the base image.")
    packages = PACKAGES + (DEBUG_PACKAGES if debug_shell else [])
    tar_path, labels = _make_rootfs(cache, packages, debug_shell, sources, say)
    config = base_image_config(debug_shell, labels)
    (cache / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    result = BaseResult(
        image=tag, image_id=None, size_bytes=tar_path.stat().st_size, built=True, debug_shell=debug_shell,
        rootfs_tar=str(tar_path), rootfs_sha256="sha256:" + sha256_file(tar_path), packages=packages,
        python_packages=python_packages(config["Labels"]),
    )
    if client is None:
        say(f"Kept {tag} in {cache} for the daemonless builder (mlfn build --builder oci)")
    else:
        say(f"Importing into Docker as {tag}")
        result.image_id, result.size_bytes = _docker_import(client, tag, tar_path, config)
    result.seconds = time.monotonic() - t0
    return result


def _reuse(client, tag: str, cache: Path, say) -> Optional[BaseResult]:
    """The existing base `tag` when it is cached (and in Docker, with a client) in the
    current format; else None (it is to be built)."""
    if not ((cache / "rootfs.tar").exists() and (cache / "config.json").exists()):
        if client is not None and image_exists(client, tag) is not None:
            # The daemonless builder and the compressed-size report read the cached root
            # file system; an image without it (cache cleared, imported elsewhere) is rebuilt.
            say(f"{tag} exists, but its root file system is not in mlfn's cache ({cache}); rebuilding it.")
        return None
    labels = json.loads((cache / "config.json").read_text()).get("Labels") or {}
    if labels.get(FORMAT_LABEL) != str(BASE_FORMAT):
        say(f"{tag} in the cache has an older layout; rebuilding it (base format {BASE_FORMAT}).")
        return None
    tar = cache / "rootfs.tar"
    debug = labels.get("dev.mlfn.base.debug-shell") == "true"
    if client is None:
        say(f"{tag} is in the cache ({cache}); reusing it (pass --force to rebuild).")
        return BaseResult(image=tag, image_id=None, size_bytes=tar.stat().st_size, built=False, debug_shell=debug,
                          rootfs_tar=str(tar), python_packages=python_packages(labels))
    existing = image_exists(client, tag)
    if existing is None or existing.labels.get(FORMAT_LABEL) != str(BASE_FORMAT):
        return None
    say(f"{tag} exists ({existing.id[:19]}); reusing it (pass --force to rebuild).")
    return BaseResult(image=tag, image_id=existing.id, size_bytes=int(existing.attrs.get("Size", 0)), built=False,
                      debug_shell=debug, rootfs_tar=str(tar), python_packages=python_packages(existing.labels))


def _make_rootfs(cache: Path, packages: list, debug_shell: bool, sources, say) -> tuple:
    """Unpack, prune and compile the root file system into `<cache>/rootfs.tar`;
    return (its path, the labels that describe it)."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlfn-base-", dir=str(cache.parent)) as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        cmd = [
            "mmdebstrap", "--variant=extract", "--format=directory",
            "--include=" + ",".join(packages),
            '--aptopt=Acquire::Check-Valid-Until "false"',
            SUITE, str(root), *(sources or sources_from_host()),
        ]
        say(f"Unpacking {', '.join(packages)} from Debian {SUITE} with mmdebstrap")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-2:])
            raise BuildError(f"mmdebstrap failed to unpack the base packages: {tail}")
        say("Pruning package manager state, docs and tools; adding the non-root user")
        customize_rootfs(root, debug_shell=debug_shell)
        numpy_version = slim_numpy(root)
        subset_lapack(root, say)
        say("Compiling the standard library and numpy (sourceless unchecked-hash .pyc)")
        # the stdlib as `python -OO` compiles it (tested by CPython under -OO): -0.9 MB of docstrings
        compile_sourceless(root / "usr/lib/python3.11", ddir="/usr/lib/python3.11", optimize=2)
        prune_stdlib(root / "usr/lib/python3.11")  # what the runtime and its deps cannot reach
        compile_sourceless(root / DIST_PACKAGES, ddir="/" + DIST_PACKAGES)
        sizes = " ".join(f"{k}={v}" for k, v in rootfs_sizes(root).items())
        labels = {FORMAT_LABEL: str(BASE_FORMAT), SIZES_LABEL: sizes}
        if numpy_version:
            labels[PACKAGES_LABEL] = f"numpy=={numpy_version}"
        tar_path = cache / "rootfs.tar"
        partial = cache / "rootfs.tar.partial"
        with open(partial, "wb") as f, open_tar(f) as tar:
            write_tree(tar, root, keep_owner=True, keep_mode=True, skip=lambda rel: rel.startswith("dev/"))
        os.replace(partial, tar_path)
    return tar_path, labels


def _docker_import(client, tag: str, tar_path: Path, config: dict) -> tuple:
    """`docker import` the root file system with the config as changes; (image id, size)."""
    changes = [f"ENV {k}={v}" for k, v in config["Env"].items()]
    changes += [f"USER {config['User']}", f"WORKDIR {config['WorkingDir']}", "CMD " + json.dumps(config["Cmd"])]
    changes += [f"LABEL {k}={json.dumps(v)}" for k, v in sorted(config["Labels"].items())]
    repo, _, t = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    try:
        client.api.import_image_from_file(str(tar_path), repository=repo, tag=t, changes=changes)
    except Exception as e:
        raise BuildError(f"docker import of {tag} failed: {_short(e)}") from None
    image = client.images.get(tag)
    return image.id, int(image.attrs.get("Size", 0))


def python_packages(labels: dict) -> dict:
    """{distribution: version} a base image provides, from its PACKAGES_LABEL ({} when none)."""
    text = (labels or {}).get(PACKAGES_LABEL) or ""
    return dict(item.split("==", 1) for item in text.split() if "==" in item)


def base_image_config(debug_shell: bool, labels: Optional[dict] = None) -> dict:
    """The runtime config of the base image (used for docker import and the OCI builder)."""
    return {
        "Env": dict(BASE_ENV),
        "User": f"{NONROOT_UID}:{NONROOT_UID}",
        "WorkingDir": "/home/nonroot",
        "Cmd": ["python3"],
        "Labels": {
            "org.opencontainers.image.title": "mlfn-base",
            "org.opencontainers.image.description": "Distroless-style Python 3.11 from Debian bookworm for mlfn functions",
            "dev.mlfn.base.debug-shell": "true" if debug_shell else "false",
            **(labels or {}),
        },
    }


def customize_rootfs(root: Path, debug_shell: bool = False) -> None:
    """Remove what a function never needs; add python3, users, /tmp and CA-free defaults."""
    if debug_shell:  # keep busybox (Debian installs it as /bin/busybox; /bin is pruned)
        for candidate in (root / "bin/busybox", root / "usr/bin/busybox"):
            if candidate.is_file() and not candidate.is_symlink():
                (root / "usr/bin").mkdir(parents=True, exist_ok=True)
                os.replace(candidate, root / "usr/bin/busybox.keep")
                break
    for rel in PRUNE:
        p = root / rel
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
    for pattern in PRUNE_GLOBS:
        for p in sorted(root.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    usr_bin = root / "usr/bin"
    for p in usr_bin.iterdir():
        if p.name not in KEEP_BIN and p.name != "busybox.keep":
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    for p in list(root.rglob("__pycache__")):
        shutil.rmtree(p, ignore_errors=True)
    (usr_bin / "python3").symlink_to("python3.11")
    (usr_bin / "python").symlink_to("python3.11")
    if debug_shell:
        os.replace(usr_bin / "busybox.keep", usr_bin / "busybox")
        (root / "bin").mkdir(exist_ok=True)
        # one link per applet (sh, ls, cat, id, ...), from the binary's own list
        out = subprocess.run([str(usr_bin / "busybox"), "--list"], capture_output=True, text=True)
        applets = [a for a in out.stdout.split() if a and "/" not in a] or ["sh"]
        for applet in sorted(set(applets) | {"sh"}):
            link = root / "bin" / applet
            if not link.exists() and not link.is_symlink() and not (usr_bin / applet).exists():
                link.symlink_to("/usr/bin/busybox")
    etc = root / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (etc / "os-release").exists() or (etc / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    for d, mode in (("tmp", 0o1777), ("root", 0o700), ("home/nonroot", 0o700), ("var/tmp", 0o1777)):
        p = root / d
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
    os.chown(root / "home/nonroot", NONROOT_UID, NONROOT_UID)
    for d in ("dev", "proc", "sys"):
        p = root / d
        if p.exists():
            shutil.rmtree(p)
        p.mkdir()


def compile_tree(path: Path, ddir: str) -> None:
    """Precompile .py files to unchecked-hash .pyc (deterministic, never re-validated).

    Runs `python -I -m compileall` in a fresh process: marshal output depends on
    reference counts, so compiling inside a busy process (with other modules loaded) is
    not reproducible. Uses this Python, which must be 3.11 for the bytecode to match the
    image's interpreter; on another version the step is skipped (the image still works)."""
    if sys.version_info[:2] != (3, 11) or not Path(path).is_dir():
        return
    cmd = [sys.executable, "-I", "-m", "compileall", "-q", "-q", "-j", "1", "-d", ddir,
           "--invalidation-mode", "unchecked-hash", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")})
    if proc.returncode not in (0, 1):  # 1: some file did not compile (e.g. py2 leftovers); keep going
        raise BuildError(f"Precompiling {path} failed: {proc.stderr.strip()[-300:]}")
