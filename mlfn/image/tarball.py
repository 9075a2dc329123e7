"""Deterministic tar layers: sorted entries, fixed owners and modes, one mtime.

Used for the base image root file system (`mlfn base build`) and by the daemonless
builder (`mlfn.image.oci`), so that identical inputs give identical bytes, hence
identical digests, on any machine (reproducible-builds.org's SOURCE_DATE_EPOCH).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Optional


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else 0 (the Unix epoch)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        try:
            return int(value)
        except ValueError:
            pass
    return 0


def created_timestamp() -> str:
    """ISO 8601 UTC time for image metadata: SOURCE_DATE_EPOCH when set, else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    t = int(value) if value and value.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _normal_mode(st_mode: int) -> int:
    if stat.S_ISDIR(st_mode):
        return 0o755
    if stat.S_ISLNK(st_mode):
        return 0o777
    return 0o755 if st_mode & 0o111 else 0o644


def iter_tree(root: Path) -> Iterable[Path]:
    """Every path under root (not root itself), sorted by their relative POSIX path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(Path(dirpath) / n)
    out.sort(key=lambda p: p.relative_to(root).as_posix())
    return out


def write_tree(
    tar: tarfile.TarFile,
    root: Path,
    prefix: str = "",
    *,
    mtime: Optional[int] = None,
    keep_owner: bool = False,
    keep_mode: bool = False,
    skip: Optional[callable] = None,
) -> None:
    """Add the tree under `root` to `tar` as `prefix/<relative path>`, deterministically.

    keep_owner/keep_mode preserve uid/gid and permission bits (root file systems);
    otherwise every entry is owned by 0:0 with 0755 dirs and 0644/0755 files.
    Hard links inside the tree stay hard links; device nodes and sockets are skipped.
    """
    mtime = source_date_epoch() if mtime is None else mtime
    root = Path(root)
    prefix = prefix.strip("/")
    if prefix:
        parts = prefix.split("/")
        for i in range(len(parts)):
            info = tarfile.TarInfo("/".join(parts[: i + 1]))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = mtime
            tar.addfile(info)
    seen_inodes: dict = {}
    for path in iter_tree(root):
        rel = path.relative_to(root).as_posix()
        if skip and skip(rel):
            continue
        name = f"{prefix}/{rel}" if prefix else rel
        st = path.lstat()
        info = tarfile.TarInfo(name)
        info.mtime = mtime
        info.mode = stat.S_IMODE(st.st_mode) if keep_mode else _normal_mode(st.st_mode)
        info.uid, info.gid = (st.st_uid, st.st_gid) if keep_owner else (0, 0)
        info.uname = info.gname = ""
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                info.type = tarfile.LNKTYPE
                info.linkname = seen_inodes[key]
                tar.addfile(info)
                continue
            if st.st_nlink > 1:
                seen_inodes[key] = name
            info.size = st.st_size
            with open(path, "rb") as f:
                tar.addfile(info, f)
        # device nodes, fifos and sockets do not belong in an image layer


def open_tar(fileobj: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: BinaryIO):
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = bytes(b)
        self.sha.update(b)
        self.size += len(b)
        self.target.write(b)
        return len(b)


def gzip_layer(tar_path: Path, out_path: Path, level: int = 6) -> tuple[str, int, str, int]:
    """Compress a layer tar with a fixed header (mtime 0, no file name).

    Returns (compressed sha256 hex, compressed size, uncompressed sha256 hex = diff_id,
    uncompressed size)."""
    raw_sha = hashlib.sha256()
    raw_size = 0
    with open(out_path, "wb") as out:
        hw = _HashingWriter(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hw, compresslevel=level, mtime=0) as gz:
            with open(tar_path, "rb") as src:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    raw_sha.update(chunk)
                    raw_size += len(chunk)
                    gz.write(chunk)
    return hw.sha.hexdigest(), hw.size, raw_sha.hexdigest(), raw_size


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(root: Path, skip: Optional[callable] = None) -> str:
    """sha256 over relative paths, modes (exec bit), link targets and file contents."""
    h = hashlib.sha256()
    root = Path(root)
    for path in iter_tree(root):
        rel = path.relative_to(root).as_posix()
        if skip and skip(rel):
            continue
        st = path.lstat()
        h.update(rel.encode() + b"\0")
        if stat.S_ISLNK(st.st_mode):
            h.update(b"L" + os.readlink(path).encode() + b"\0")
        elif stat.S_ISREG(st.st_mode):
            h.update(b"X" if st.st_mode & 0o111 else b"F")
            h.update(sha256_file(path).encode() + b"\0")
        elif stat.S_ISDIR(st.st_mode):
            h.update(b"D\0")
    return h.hexdigest()
