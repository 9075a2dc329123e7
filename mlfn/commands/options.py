"""What the commands share, declared once: the typed context object, the option groups
(one decorator per group, as sqlite-utils declares its output options) and the two helpers
that turn parsed options into library arguments.

Option groups:
- `config_option`: `--config/-c PATH`
- `output_option`: `--output/-o text|json` (also tells the error handler in mlfn.cli which
  format a failure must be reported in)
- `target_options`: `--target/-t --apihost --auth --namespace/-n --insecure --kubeconfig
  --context --host --port`, collected into a TargetOptions by `target_from(kw)`
- `dry_run_option(help=...)`: `--dry-run`

Only click and light mlfn modules are imported here; `mlfn --help` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

import click

OUTPUT_FORMATS = ("text", "json")
TARGETS = ("local", "openwhisk", "knative")
TARGET_OPTION_NAMES = ("target", "apihost", "auth", "namespace", "insecure", "kubeconfig", "context", "host", "port")
DRY_RUN_HELP = "Print the requests; send none."


@dataclass
class CliContext:
    """`ctx.obj` of every mlfn command: set by `mlfn` itself and by the shared options."""

    debug: bool = False  # --debug: tracebacks and debug logs
    output: str = "text"  # the running command's --output (a failure is reported in this format too)


def _remember_output(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.ensure_object(CliContext).output = value
    return value


def requested_output(args: list[str]) -> str:
    """The --output a command line asks for, read before click parses it, so that a line
    click cannot parse (an unknown option) is still answered in that format."""
    output = "text"
    args = [str(a) for a in args]  # callers (click's test runner) may pass paths
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", "--output") and i + 1 < len(args):
            output = args[i + 1]
        elif arg.startswith("--output="):
            output = arg.split("=", 1)[1]
        elif arg.startswith("-o") and not arg.startswith("--") and len(arg) > 2:
            output = arg[2:]
    return output if output in OUTPUT_FORMATS else "text"


def output_option(f):
    """`--output text|json`: a human summary, or one JSON document on stdout."""
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(OUTPUT_FORMATS),
        default="text",
        show_default=True,
        callback=_remember_output,
        help="Result format: a human summary, or one JSON document on stdout for CI.",
    )(f)


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


def target_options(f):
    """Where the function is deployed and how to reach it; `target_from(kw)` collects them."""
    opts = [
        click.option("--target", "-t", type=click.Choice(TARGETS), default=None,
                     help="Platform (default: deploy.target in mlfn.yaml, else local)."),
        click.option("--apihost", envvar="MLFN_OW_APIHOST", help="OpenWhisk API host (default: APIHOST in ~/.wskprops "
                     "or $WSK_CONFIG_FILE; https when no scheme)."),
        click.option("--auth", envvar="MLFN_OW_AUTH", help="OpenWhisk key uuid:key (default: AUTH in ~/.wskprops). "
                     "Never printed."),
        click.option("--namespace", "-n", help="OpenWhisk namespace or Kubernetes namespace."),
        click.option("--insecure", is_flag=True, help="Accept a self-signed TLS certificate (OpenWhisk)."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file (Knative)."),
        click.option("--context", help="Kubeconfig context (Knative)."),
        click.option("--host", metavar="ADDRESS", help="Knative: send requests to this ingress address "
                     "(e.g. 127.0.0.1:31080) with the function's Host header, for clusters without DNS."),
        click.option("--port", type=int, default=None, help="Port of the local controller (default 3233)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def dry_run_option(help: str = DRY_RUN_HELP):  # noqa: A002  (click's own keyword)
    """`--dry-run`: show the platform requests a command would send, and send none."""
    return click.option("--dry-run", is_flag=True, help=help)


def target_from(kw: dict, dry_run: bool = False):
    """The TargetOptions of a command decorated with `target_options` (taken out of its **kw)."""
    from mlfn.releases import TargetOptions

    return TargetOptions(**{name: kw.pop(name) for name in TARGET_OPTION_NAMES}, dry_run=dry_run)


def project_config(config_path, required: bool = False):
    """mlfn.yaml when there is one; a --config PATH that names nothing is an error, not ignored."""
    from mlfn.config import load_config

    return load_config(config_path, required=required or config_path is not None)
