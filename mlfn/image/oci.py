"""The daemonless builder (`mlfn build --builder oci`): the same layers as the Dockerfile,
assembled in Python as tar + gzip + sha256 into an OCI image, without a Docker daemon.

Base layers come from
- the root file system `mlfn base build` keeps in the cache (`<cache>/base/<tag>/rootfs.tar`
  and config.json), compressed deterministically once; or
- a registry, over the HTTP API (`mlfn.image.registry`), for any other base
  (e.g. `registry.example.com/python:3.11-slim`); blobs are cached by digest.
The result is written as an OCI image layout (`--oci-layout DIR`, default
`<project>/.mlfn/oci`) and/or pushed straight to a registry (`--push`).

Reproducible: identical inputs give an identical manifest digest on any machine. Every
entry is sorted, owned by 0:0 with fixed modes and the mtime SOURCE_DATE_EPOCH (default 0,
like ko), gzip headers carry no name and mtime 0, and the image config's `created` is
SOURCE_DATE_EPOCH too (1970-01-01 by default).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlfn.image.base_image import DEFAULT_BASE_TAG, base_cache_dir, cache_dir
from mlfn.image.tarball import gzip_layer, open_tar, source_date_epoch, tree_hash, write_tree
from mlfn.image.registry import (DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, Registry,
                                 credentials_for, split_reference)
from mlfn.errors import BuildError

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
LAYER_FORMAT = 1  # bump when the tar/gzip encoding changes (invalidates the layer cache)


@dataclass
class Blob:
    path: Path  # the compressed blob on disk (cache)
    digest: str  # sha256:... of the compressed bytes
    size: int
    diff_id: str  # sha256:... of the uncompressed tar
    uncompressed_size: int
    media_type: str = OCI_LAYER_GZ


def _blob_dir() -> Path:
    d = cache_dir() / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _store(tmp_gz: Path, sha: str) -> Path:
    dest = _blob_dir() / sha
    if dest.exists():
        tmp_gz.unlink()
    else:
        os.replace(tmp_gz, dest)
    return dest


def _cached_layer(key: str, make_tar: Callable[[Path], None]) -> Blob:
    """A gzip layer from `make_tar(path)`, cached under `<cache>/layers/<key>.json`."""
    index = cache_dir() / "layers"
    index.mkdir(parents=True, exist_ok=True)
    meta = index / f"{key}.json"
    try:
        m = json.loads(meta.read_text())
        p = _blob_dir() / m["digest"].split(":", 1)[1]
        if p.exists():
            return Blob(p, m["digest"], m["size"], m["diff_id"], m["uncompressed_size"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no entry, or one left unreadable by an older interrupted build: make the layer again
    with tempfile.TemporaryDirectory(dir=str(index)) as tmp:
        tar_path = Path(tmp) / "layer.tar"
        make_tar(tar_path)
        gz_tmp = Path(tmp) / "layer.tar.gz"
        sha, size, diff, usize = gzip_layer(tar_path, gz_tmp)
        path = _store(gz_tmp, sha)
    blob = Blob(path, f"sha256:{sha}", size, f"sha256:{diff}", usize)
    tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")  # atomic: never a half-written entry
    tmp_meta.write_text(json.dumps({"digest": blob.digest, "size": size, "diff_id": blob.diff_id,
                                    "uncompressed_size": usize}))
    os.replace(tmp_meta, meta)
    return blob


def tree_layer(src: Path, prefix: str, epoch: int) -> Blob:
    """A layer holding `src`'s tree under `prefix` (0:0, fixed modes, mtime `epoch`)."""
    key = hashlib.sha256(json.dumps([LAYER_FORMAT, prefix, epoch, tree_hash(src)]).encode()).hexdigest()

    def make(tar_path: Path):
        with open(tar_path, "wb") as f, open_tar(f) as tar:
            write_tree(tar, src, prefix, mtime=epoch)

    return _cached_layer(key, make)


# -- the base --------------------------------------------------------------------------
@dataclass
class Base:
    layers: list  # [Blob]
    config: dict  # the base image's config (Env, User, WorkingDir, Cmd, Labels, ...)
    history: list
    identity: str  # for the content hash


def base_from_cache(tag: str) -> Optional[Base]:
    d = base_cache_dir(tag)
    rootfs, cfg_path = d / "rootfs.tar", d / "config.json"
    if not rootfs.exists() or not cfg_path.exists():
        return None
    cfg = json.loads(cfg_path.read_text())
    st = rootfs.stat()
    key = hashlib.sha256(json.dumps([LAYER_FORMAT, "base", str(rootfs), st.st_size, st.st_mtime_ns]).encode()).hexdigest()
    blob = _cached_layer(key, lambda p: shutil.copyfile(rootfs, p))
    env = [f"{k}={v}" for k, v in cfg.get("Env", {}).items()]
    config = {"Env": env, "User": cfg.get("User", ""), "WorkingDir": cfg.get("WorkingDir", ""),
              "Cmd": cfg.get("Cmd"), "Labels": cfg.get("Labels", {})}
    history = [{"created": _iso(source_date_epoch()), "created_by": f"mlfn base build ({tag})", "comment": "mmdebstrap"}]
    return Base([blob], config, history, blob.diff_id)


def base_from_registry(ref: str, progress: Optional[Callable[[str], None]] = None) -> Base:
    say = progress or (lambda m: None)
    host, repo, tag, digest = split_reference(ref)
    reg = Registry(host, repo, credentials_for(host))
    manifest = reg.get_manifest(digest or tag or "latest")
    if manifest.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        chosen = [m for m in manifest.get("manifests", [])
                  if m.get("platform", {}).get("os") == "linux" and m.get("platform", {}).get("architecture") == "amd64"]
        if not chosen:
            raise BuildError(f"The base image {ref} has no linux/amd64 variant.")
        manifest = reg.get_manifest(chosen[0]["digest"])
    cfg_digest = manifest["config"]["digest"]
    cfg_path = _blob_dir() / cfg_digest.split(":", 1)[1]
    if not cfg_path.exists():
        reg.download_blob(cfg_digest, cfg_path)
    image_cfg = json.loads(cfg_path.read_text())
    diff_ids = image_cfg.get("rootfs", {}).get("diff_ids", [])
    layers = []
    for desc, diff in zip(manifest.get("layers", []), diff_ids):
        p = _blob_dir() / desc["digest"].split(":", 1)[1]
        if not p.exists():
            say(f"Pulling base layer {desc['digest'][:19]} ({desc.get('size', 0) / 1e6:.1f} MB)")
            reg.download_blob(desc["digest"], p)
        media = desc.get("mediaType", OCI_LAYER_GZ).replace(
            "application/vnd.docker.image.rootfs.diff.tar.gzip", OCI_LAYER_GZ)
        layers.append(Blob(p, desc["digest"], int(desc["size"]), diff, 0, media))
    c = image_cfg.get("config") or {}
    config = {k: c.get(k) for k in ("Env", "User", "WorkingDir", "Cmd", "Entrypoint", "Labels") if c.get(k) is not None}
    return Base(layers, config, image_cfg.get("history", []), cfg_digest)


def load_base(ref: str, progress=None) -> Base:
    local = base_from_cache(ref)
    if local is not None:
        return local
    host, _, _, _ = split_reference(ref)
    if "/" not in ref or ref.split("/")[0] in ("mlfn-base",) or ref.startswith(DEFAULT_BASE_TAG.split(":")[0] + ":"):
        raise BuildError(f"The base image {ref} is not in mlfn's cache ({base_cache_dir(ref)}); "
                         f"run 'mlfn base build --tag {ref}' first, or name a base in a registry.")
    return base_from_registry(ref, progress)


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# -- assembling ------------------------------------------------------------------------
def image_config(base: Base, layers: list, labels: dict, epoch: int) -> dict:
    from mlfn.image.context import IMAGE_CMD, IMAGE_ENV, PORT
    from mlfn.image.base_image import NONROOT_UID

    env = {}
    for item in base.config.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    env.update(IMAGE_ENV)
    created = _iso(epoch)
    history = list(base.history) + [
        {"created": created, "created_by": f"COPY {name}/ {dest}", "comment": "mlfn"} for name, dest, _ in layers
    ] + [{"created": created, "created_by": "USER/EXPOSE/CMD/LABEL (mlfn)", "empty_layer": True}]
    return {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": str(NONROOT_UID),
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Cmd": list(IMAGE_CMD),
            "WorkingDir": base.config.get("WorkingDir") or "/",
            "ExposedPorts": {f"{PORT}/tcp": {}},
            "Labels": {**(base.config.get("Labels") or {}), **labels},
        },
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in base.layers] + [b.diff_id for _, _, b in layers]},
        "history": history,
    }


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_layout(out: Path, blobs: list, config: bytes, manifest: bytes, ref_name: str) -> None:
    """An OCI image layout: oci-layout, index.json (one manifest named `ref_name`), blobs/."""
    blobdir = out / "blobs" / "sha256"
    blobdir.mkdir(parents=True, exist_ok=True)
    for b in blobs:
        dest = blobdir / b.digest.split(":", 1)[1]
        if not dest.exists():
            try:
                os.link(b.path, dest)
            except OSError:
                shutil.copyfile(b.path, dest)
    for data in (config, manifest):
        (blobdir / hashlib.sha256(data).hexdigest()).write_bytes(data)
    (out / "oci-layout").write_text(json.dumps(LAYOUT_VERSION))
    index_path = out / "index.json"
    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
             "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref_name}}
    manifests = []
    if index_path.exists():
        try:
            old = json.loads(index_path.read_text()).get("manifests", [])
            manifests = [m for m in old if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != ref_name]
        except ValueError:
            manifests = []
    manifests.append(entry)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True))


def push_oci(push: str, ref_tag: str, blobs: list, config: bytes, config_digest: str, manifest: bytes,
             digest: str, say) -> tuple:
    """Upload the blobs, the config and the manifest to the registry `push` names:
    (pushed reference, reference by digest)."""
    from mlfn.image.docker_builder import parse_push_ref

    prepo, ptag = parse_push_ref(push, ref_tag)
    host, repo, _, _ = split_reference(prepo)
    reg = Registry(host, repo, credentials_for(host))
    say(f"Pushing {prepo}:{ptag}")
    tmp_cfg = Path(tempfile.mkstemp(prefix="mlfn-config-")[1])
    try:
        tmp_cfg.write_bytes(config)
        for b in blobs:
            reg.upload_blob(b.path, b.digest, b.size)
        reg.upload_blob(tmp_cfg, config_digest, len(config))
    finally:
        tmp_cfg.unlink(missing_ok=True)
    got = reg.put_manifest(ptag, manifest, OCI_MANIFEST)
    if got != digest:
        raise BuildError(f"The registry {host} stored the manifest as {got}, not {digest}.")
    return f"{prepo}:{ptag}", f"{prepo}@{digest}"


def layer_report(base, layers: list) -> list:
    """`BuildResult.layers`: the base's layers as one entry, then each layer mlfn added."""
    out = [{"name": "base", "size_bytes": sum(b.uncompressed_size or 0 for b in base.layers) or None,
            "compressed_size_bytes": sum(b.size for b in base.layers), "diff_ids": [b.diff_id for b in base.layers]}]
    for name, dest, b in layers:
        out.append({"name": name, "path": dest, "size_bytes": b.uncompressed_size, "compressed_size_bytes": b.size,
                    "diff_id": b.diff_id, "digest": b.digest})
    return out


def build_oci(cfg, *, tag=None, push=None, progress=None, oci_layout=None, quantize=None):
    """Assemble the function image without a daemon; see the module doc."""
    from mlfn.image.base_image import python_packages
    from mlfn.image.context import prepare_context
    from mlfn.image.slim import add_package_sizes
    from mlfn.image.result import BuildResult, image_reference

    say = progress or (lambda m: None)
    epoch = source_date_epoch()
    base = load_base(cfg.build.base_image, progress)
    ctx = prepare_context(cfg, base_id=base.identity, progress=progress, quantize=quantize, reproducible=True,
                          base_packages=python_packages(base.config.get("Labels") or {}))
    ref = image_reference(tag, ctx.repository, ctx.default_tag)
    repo_name, ref_tag = ref.rsplit(":", 1)

    say("Writing the layers (tar + gzip + sha256)")
    layers = []
    for name, folder, dest in ctx.layer_dirs():
        layers.append((name, dest, tree_layer(folder, dest.strip("/"), epoch)))
    config_doc = image_config(base, layers, ctx.labels, epoch)
    config = _canonical(config_doc)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    all_blobs = list(base.layers) + [b for _, _, b in layers]
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in all_blobs],
    }
    manifest = _canonical(manifest_doc)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()

    layout = None
    if oci_layout or not push:
        layout = Path(oci_layout) if oci_layout else cfg.project_dir / ".mlfn" / "oci"
        say(f"Writing the OCI image layout {layout}")
        write_layout(layout, all_blobs, config, manifest, ref_tag)

    repo_digest = pushed_ref = None
    if push:
        pushed_ref, repo_digest = push_oci(push, ref_tag, all_blobs, config, config_digest, manifest, digest, say)
    result_layers = layer_report(base, layers)
    add_package_sizes(result_layers, ctx.path, base.config.get("Labels") or {})
    return BuildResult(
        image=pushed_ref or ref, image_id=config_digest, digest=digest, repo_digest=repo_digest,
        size_bytes=sum(b.uncompressed_size or 0 for b in all_blobs),
        compressed_size_bytes=sum(b.size for b in all_blobs), layers=result_layers, labels=ctx.labels,
        model_sha256=ctx.model_sha256, quantization=ctx.quantization, pipeline_hash=ctx.pipeline_hash,
        content_hash=ctx.content_hash, builder="oci", cached=False,
        oci_layout=str(layout) if layout else None, context_dir=str(ctx.path), function_dir=str(ctx.function_dir),
        models=[{"name": m["name"], "sha256": m["sha256"], "quantization": m["quantization"]}
                for m in ctx.function["models"]],
    )
