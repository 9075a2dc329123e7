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
    The model's inputs and output activation are read from the file (a SavedModel's
    signature): an image model gets an image pipeline (decode, convert, resize, scale),
    and post-processing fits the output (top-k after a softmax, softmax + top-k after
    logits). A labels.txt beside the model becomes pipeline.labels.

    \b
    Example:
      mlfn init model.keras --name digits
    """
    from mlfn.project import init_project

    result = init_project(model, out=out, name=name, force=force)
    for warning in result["warnings"] if output == "text" else []:  # JSON carries them in "warnings"
        click.echo(f"Warning: {warning}", err=True)
    emit(result, output, _render_init)


def _render_init(r: dict) -> str:
    lines = [f"Wrote {r['config']} for function '{r['name']}' (model {r['model']})."]
    for spec in r["inputs"]:
        lines.append(f"  input  {spec['name']}: {spec['shape']} {spec['dtype']}")
    if r["output_activation"]:
        lines.append(f"  output ends in {r['output_activation']}, so post-processing does not add another one")
    if r["labels"]:
        lines.append(f"  labels {r['labels']}")
    return "\n".join(lines)
