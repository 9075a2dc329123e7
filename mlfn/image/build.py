"""`build_image`: mlfn.yaml -> a function image (docker or daemonless oci builder)."""
from __future__ import annotations

import errno
from typing import Callable, Optional

from mlfn.errors import BuildError, ConfigError
from mlfn.image.result import BuildResult, image_reference


def build_image(cfg, *, tag: Optional[str] = None, push: Optional[str] = None, builder: Optional[str] = None,
                progress: Optional[Callable[[str], None]] = None, oci_layout: Optional[str] = None,
                quantize: Optional[Callable] = None) -> BuildResult:
    """Build the function image for `cfg` (mlfn.config.Config).

    tag: image reference or tag (default: `<build.image or mlfn/NAME>:<content hash>`).
    push: REGISTRY/REPO[:TAG] to push to afterwards (docker credentials are used).
    builder: 'docker' (local engine) or 'oci' (daemonless; writes an OCI layout and/or pushes
    over the registry HTTP API). Identical content under an existing tag is not rebuilt."""
    builder = builder or cfg.build.builder
    if builder not in ("docker", "oci"):
        raise ConfigError(f"--builder is {builder!r}; choose docker or oci.")
    if oci_layout and builder != "oci":
        raise ConfigError("--oci-layout is written by the daemonless builder; add --builder oci.")
    if push:
        from mlfn.image.docker_builder import parse_push_ref

        parse_push_ref(push, "latest")  # a bad reference fails before any work
    try:
        if builder == "oci":
            from mlfn.image.oci import build_oci

            return build_oci(cfg, tag=tag, push=push, progress=progress, oci_layout=oci_layout, quantize=quantize)
        return _build_docker(cfg, tag=tag, push=push, progress=progress, quantize=quantize)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            where = f" ({e.filename})" if e.filename else ""
            raise BuildError(f"The disk is full{where} while building the image of {cfg.name}; free space and retry.") from None
        raise


def _build_docker(cfg, *, tag, push, progress, quantize) -> BuildResult:
    from mlfn.image.base_image import docker_client, python_packages
    from mlfn.image.slim import add_package_sizes
    from mlfn.image.context import prepare_context
    from mlfn.image.docker_builder import docker_build, docker_push, ensure_base, image_layers, parse_push_ref

    say = progress or (lambda m: None)
    client = docker_client()
    base = ensure_base(client, cfg.build.base_image, progress)
    ctx = prepare_context(cfg, base_id=base.id, progress=progress, quantize=quantize,
                          base_packages=python_packages(base.labels))
    ref = image_reference(tag, ctx.repository, ctx.default_tag)

    existing = None
    try:
        import docker

        existing = client.images.get(ref)
    except docker.errors.ImageNotFound:
        pass
    if existing is not None and existing.labels.get("dev.mlfn.content-hash") == ctx.content_hash:
        say(f"{ref} already holds this content ({ctx.content_hash[:19]}); not rebuilding.")
        image_id, cached = existing.id, True
    else:
        say(f"Building {ref} from {ctx.path}")
        image_id, cached = docker_build(client, ctx, ref, progress=say), False
    attrs = client.api.inspect_image(image_id)
    layers = add_package_sizes(image_layers(client, image_id, base.id, int(base.attrs.get("Size", 0))),
                               ctx.path, base.labels)
    digest, repo_digest, compressed = image_id, None, None
    if push:
        repo, ptag = parse_push_ref(push, ref.rsplit(":", 1)[1])
        digest, _ = docker_push(client, image_id, repo, ptag, progress=say)
        repo_digest = f"{repo}@{digest}"
        compressed = _registry_compressed_size(repo, digest)
    if compressed is None:
        compressed = _estimate_compressed(ctx, layers)
    labels = attrs.get("Config", {}).get("Labels") or {}
    from mlfn.image.prune import prune_hint

    hint = prune_hint(client, cfg.name)
    return BuildResult(
        image=ref, image_id=image_id, digest=digest, repo_digest=repo_digest,
        size_bytes=int(attrs.get("Size", 0)), compressed_size_bytes=compressed, layers=layers,
        labels=labels, model_sha256=ctx.model_sha256, quantization=ctx.quantization,
        pipeline_hash=ctx.pipeline_hash, content_hash=ctx.content_hash, builder="docker", cached=cached,
        context_dir=str(ctx.path), function_dir=str(ctx.function_dir),
        models=[{"name": m["name"], "sha256": m["sha256"], "quantization": m["quantization"]}
                for m in ctx.function["models"]],
        notes=[hint] if hint else [],
    )


def _estimate_compressed(ctx, layers: list) -> Optional[int]:
    """Compressed size as a registry would store it, from the daemonless builder's gzip
    layers (cached by content, so only changed layers are compressed again). None when
    the base is not in mlfn's cache (a user-chosen base)."""
    try:
        from mlfn.image.oci import base_from_cache, tree_layer
        from mlfn.image.tarball import source_date_epoch

        base = base_from_cache(ctx.base_image)
        if base is None:
            return None
        total = sum(b.size for b in base.layers)
        by_name = {layer["name"]: layer for layer in layers}
        for name, folder, dest in ctx.layer_dirs():
            blob = tree_layer(folder, dest.strip("/"), source_date_epoch())
            if name in by_name:
                by_name[name]["compressed_size_bytes"] = blob.size
            total += blob.size
        if "base" in by_name:
            by_name["base"]["compressed_size_bytes"] = sum(b.size for b in base.layers)
        return total
    except Exception:  # an estimate only; never fail a build over it
        return None


def _registry_compressed_size(repo: str, digest: str) -> Optional[int]:
    """Sum of the pushed manifest's layer sizes (best effort; None when unknown)."""
    try:
        from mlfn.image.registry import Registry

        reg = Registry.for_repository(repo)
        manifest = reg.get_manifest(digest)
        return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
    except Exception:
        return None
