"""The `mlfn` command: a thin click layer over the library.

Each command parses options, builds one config object, calls one library function and
renders the result (see mlfn.output). Library errors (mlfn.errors.MlfnError) become one
clear sentence and a non-zero exit here, in one place; `--debug` shows tracebacks.

Heavy modules (TensorFlow, docker, the kubernetes client) are imported inside the
library functions, never at import time of this module, so `mlfn --help` is fast and
works without TensorFlow installed.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from mlfn import __version__
from mlfn.errors import MlfnError

# command name -> "module:attribute" (imported only when the command runs or lists help)
COMMANDS = {
    "init": "mlfn.commands.project:init",
    "quantize": "mlfn.commands.quantize:quantize",
    "build": "mlfn.commands.build:build",
    "base": "mlfn.commands.build:base",
    "run": "mlfn.commands.run:run",
    "invoke": "mlfn.commands.run:invoke",
    "deploy": "mlfn.commands.deploy:deploy",
    "versions": "mlfn.commands.deploy:versions",
    "status": "mlfn.commands.deploy:status",
    "traffic": "mlfn.commands.deploy:traffic",
    "promote": "mlfn.commands.deploy:promote",
    "rollback": "mlfn.commands.deploy:rollback",
    "delete": "mlfn.commands.deploy:delete",
    "render": "mlfn.commands.deploy:render",
    "local": "mlfn.commands.local:local",
    "images": "mlfn.commands.images:images",
}


class MlfnGroup(click.Group):
    """Loads commands lazily and turns MlfnError into a one-line message + exit code."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        module, attr = spec.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlfnError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=MlfnGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlfn")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.pass_context
def main(ctx, debug):
    """Turn a trained TensorFlow/Keras model into a small, fast serverless function.

    \b
    The path from a model to a served function:
      mlfn init model.keras          write a commented mlfn.yaml
      mlfn quantize                  SavedModel/.keras -> small .tflite, with a report
      mlfn build                     a function image (LiteRT + your pre/post-processing)
      mlfn run / mlfn invoke         try it locally
      mlfn deploy --target local     publish version vN behind aliases
      mlfn traffic NAME v1=90 v2=10  canary; promote / rollback in one command

    Every command that produces a result accepts --output json for CI.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    main()
