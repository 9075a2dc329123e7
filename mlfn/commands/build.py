"""`mlfn build` and `mlfn base build`: function images and their base image."""
from __future__ import annotations

import click

from mlfn.commands.options import config_option, output_option


def _render_build(r) -> str:
    from mlfn.output import human_bytes, table

    rows = [(layer["name"], layer.get("path", ""), human_bytes(layer.get("size_bytes")),
             human_bytes(layer.get("compressed_size_bytes"))) for layer in r.layers]
    lines = [table(rows, ["LAYER", "PATH", "SIZE", "COMPRESSED"]), ""]
    total = f"total {human_bytes(r.size_bytes)} uncompressed"
    if r.compressed_size_bytes:
        total += f", {human_bytes(r.compressed_size_bytes)} compressed"
    lines.append(total)
    lines.append(f"image   {r.image}{'  (unchanged content, not rebuilt)' if r.cached else ''}")
    if r.oci_layout:
        lines.append(f"layout  {r.oci_layout}")
    if r.repo_digest:
        lines.append(f"pushed  {r.repo_digest}")
    lines.append(f"digest  {r.digest}")
    return "\n".join(lines)


@click.command()
@config_option
@click.option("--tag", "-t", default=None, metavar="[REPO:]TAG",
              help="Image reference or tag (default: build.image or mlfn/NAME, tagged with the content hash).")
@click.option("--push", default=None, metavar="REGISTRY/REPO[:TAG]",
              help="Push the image there after building (your docker login credentials are used).")
@click.option("--builder", type=click.Choice(["docker", "oci"]), default=None,
              help="docker: the local engine. oci: no daemon; writes an OCI layout and/or pushes over HTTP. "
                   "[default: build.builder, docker]")
@click.option("--oci-layout", "oci_layout", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="With --builder oci: write the image as an OCI image layout in DIR.")
@output_option
def build(config_path, tag, push, builder, oci_layout, output):
    """Build the function image: LiteRT + your model + pre/post-processing.

    Quantizes the model (cached), installs numpy/LiteRT (and Pillow when the pipeline
    decodes images) for the image on this machine, and builds the layers
    base -> deps -> runtime -> models -> config, so changing only the pipeline rebuilds
    only the last layer. Identical content keeps its tag and is not rebuilt.

    \b
    Examples:
      mlfn build                                   # mlfn/NAME:<content hash> in local Docker
      mlfn build --tag mlfn/digits:dev
      mlfn build --push localhost:5000/digits      # push; prints the repo digest
      mlfn build --builder oci --oci-layout out/   # no Docker daemon needed
      mlfn build --builder oci --push registry.example.com/team/digits:v1
      mlfn build -o json | jq -r .digest
    """
    from mlfn.image import build_image
    from mlfn.config import load_config
    from mlfn.output import Progress, emit

    cfg = load_config(config_path)
    result = build_image(cfg, tag=tag, push=push, builder=builder, oci_layout=oci_layout, progress=Progress())
    for note in result.notes:
        click.echo(f"Note: {note}", err=True)
    emit(result, output, _render_build)


@click.group()
def base():
    """The base image function images are built on (`mlfn-base:3.11`).

    \b
    Examples:
      mlfn base build                   # once per machine, about 10 s
      mlfn build                        # then function images use it (build.base_image)
    """


@base.command("build")
@click.option("--tag", "-t", default="mlfn-base:3.11", show_default=True, help="Tag of the base image.")
@click.option("--debug-shell", is_flag=True, help="Include busybox and /bin/sh (for debugging only).")
@click.option("--force", is_flag=True, help="Rebuild even when the tag already exists.")
@click.option("--no-import", "no_import", is_flag=True,
              help="No Docker engine: keep the root file system in mlfn's cache for --builder oci only.")
@output_option
def base_build(tag, debug_shell, force, no_import, output):
    """Build a distroless-style Python 3.11 base image from Debian bookworm packages.

    Only what Python, numpy, Pillow and LiteRT need (libc, libstdc++6, libgcc, zlib and
    the Python standard library) is unpacked with mmdebstrap; no package manager and no
    shell; runs as the non-root user 65532. Takes about 10 s; reused when the tag exists.

    \b
    Examples:
      mlfn base build
      mlfn base build --force --debug-shell --tag mlfn-base:3.11-debug
      mlfn base build --no-import        # no Docker here: for 'mlfn build --builder oci'
      mlfn base build -o json
    """
    from mlfn.image import build_base_image
    from mlfn.output import Progress, emit, human_bytes

    result = build_base_image(tag, debug_shell=debug_shell, force=force, docker_import=not no_import,
                              progress=Progress())

    def text(r):
        state = "built" if r.built else "exists"
        return f"{r.image}  {state}  {human_bytes(r.size_bytes)}  {r.image_id or r.rootfs_tar}"

    emit(result, output, text)
