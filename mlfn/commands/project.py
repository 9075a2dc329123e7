"""`mlfn init`."""
from __future__ import annotations

import click

from mlfn.commands.options import output_option
from mlfn.output import emit


@click.command()
@click.argument("model", metavar="MODEL")
@click.option("--name", help="Function name (default: the model's file name).")
@click.option("--out", default="mlfn.yaml", show_default=True, type=click.Path(), help="Where to write the file.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@output_option
def init(model, name, out, force, output):
    """Write a commented mlfn.yaml for MODEL with every key at its default.

    MODEL is a SavedModel folder, a .keras or .h5 file, a .tflite file, or s3://bucket/key.
    For a .keras image model the input shape is read from the file and an image
    pipeline (decode, convert, resize, scale; softmax, top-k) is suggested.

    \b
    Example:
      mlfn init model.keras --name digits
    """
    from mlfn.project import init_project

    result = init_project(model, out=out, name=name, force=force)
    emit(result, output, lambda r: f"Wrote {r['config']} for function '{r['name']}' (model {r['model']}).")
