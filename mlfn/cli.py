"""The `mlfn` command: a thin click layer over the library.

Each command parses options, builds one config object, calls one library function and
renders the result (see mlfn.output). Library errors (mlfn.errors.MlfnError) become one
clear sentence on stderr and a non-zero exit here, in one place; `--debug` shows
tracebacks. With `--output json` every failure (a library error or a usage error) is also
one JSON document on stdout: {"error": {"message", "type", "exit_code"}}.

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
from mlfn.commands.options import CliContext, requested_output
from mlfn.errors import MlfnError
from mlfn.output import emit_error

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
    "rollout": "mlfn.commands.rollout:rollout",
    "images": "mlfn.commands.images:images",
    "keys": "mlfn.commands.keys:keys",
}


class MlfnGroup(click.Group):
    """Loads commands lazily and turns MlfnError into a one-line message + exit code (and,
    with --output json, into a JSON error document on stdout)."""

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

    def parse_args(self, ctx, args):
        ctx.ensure_object(CliContext).output = requested_output(args)  # the --output option confirms it
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        cli = ctx.ensure_object(CliContext)
        try:
            return super().invoke(ctx)
        except MlfnError as e:
            emit_error(type(e).__name__, str(e), e.exit_code, cli.output)
            if cli.debug:
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:  # a usage error: click prints it on stderr and exits
            emit_error(type(e).__name__, e.format_message(), e.exit_code, cli.output)
            raise
        except KeyboardInterrupt:
            emit_error("Interrupted", "Interrupted.", 130, cli.output)
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
    ctx.ensure_object(CliContext).debug = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    main()
