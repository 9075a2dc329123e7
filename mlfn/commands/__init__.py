"""Click commands, one module per area. Shared option groups live here.

A command module imports only click and light mlfn modules at import time; the work is
done by library functions it imports inside the command body."""
from __future__ import annotations

import click

from mlfn.output import output_option  # noqa: F401  (re-exported for command modules)


def config_option(f):
    """`--config PATH`: mlfn.yaml or the folder holding it."""
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=True),
        default=None,
        help="mlfn.yaml, or the folder that holds it (default: ./mlfn.yaml).",
    )(f)
