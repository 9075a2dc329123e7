"""`mlfn images prune`: old function images in the local Docker engine."""
from __future__ import annotations

import click

from mlfn.commands.options import (config_option, dry_run_option, output_option, project_config, target_from,
                                   target_options)


@click.group()
def images():
    """The function images `mlfn build` left in the local Docker engine.

    \b
    Examples:
      mlfn images prune --dry-run      # what would go
      mlfn images prune --keep 1
    """


@images.command("prune")
@config_option
@click.option("--keep", default=3, show_default=True, type=int, metavar="N",
              help="Keep the N newest builds besides those deployed versions use.")
@target_options
@dry_run_option(help="List what would be removed; remove nothing.")
@output_option
def prune(config_path, keep, dry_run, output, **kw):
    """Remove this function's images that no deployed version (on deploy.target, or
    --target) uses, except the --keep newest builds.

    \b
    Examples:
      mlfn images prune --dry-run
      mlfn images prune --keep 1 -o json
    """
    from mlfn.releases import versions
    from mlfn.image.base_image import docker_client
    from mlfn.image.prune import deployed_keys, prune_images
    from mlfn.output import Progress, emit, human_bytes

    cfg = project_config(config_path, required=True)
    options = target_from(kw)
    deployed = deployed_keys(cfg.name, lambda: versions(cfg.name, options, cfg))
    result = prune_images(docker_client(), cfg.name, deployed, keep=keep, dry_run=dry_run, progress=Progress())

    def text(r):
        verb = "would remove" if r.dry_run else "removed"
        lines = [f"{verb} {i['image']}" for i in r.removed]
        lines += [f"kept    {i['image']}  ({i['why']})" for i in r.kept]
        lines.append(f"{len(r.removed)} image(s) {verb}, {len(r.kept)} kept; up to {human_bytes(r.freed_bytes)} "
                     "freed (layers shared with kept images stay).")
        return "\n".join(lines)

    emit(result, output, text)
