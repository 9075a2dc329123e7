"""`mlfn local up|down|status`: the embedded OpenWhisk-compatible controller."""
from __future__ import annotations

import click

from mlfn.commands.options import output_option
from mlfn.output import emit


def _text(st) -> str:
    lines = [f"Local OpenWhisk API: {st.message}"]
    if st.running:
        from mlfn.targets.openwhisk.wskprops import GUEST_NAMESPACE

        key = ("OpenWhisk standalone's well-known guest key" if st.key == "guest"
               else f"a private key (mlfn local up --auth generate), in {st.wskprops}")
        lines += [f"  apihost    {st.apihost}", f"  namespace  {GUEST_NAMESPACE}", f"  key        {key}",
                  f"  functions  {st.functions}   warm containers {st.containers}",
                  f"  state      {st.state_dir}", f"  log        {st.log_file}"]
    return "\n".join(lines)


@click.group()
def local():
    """The embedded OpenWhisk-compatible API on 127.0.0.1 that runs functions in Docker.

    `mlfn deploy --target local` talks to it; so does the standard `wsk` CLI:
    wsk property set --apihost http://127.0.0.1:3233 --auth <OpenWhisk standalone's well-known
    guest key>, or, with a private key (`mlfn local up --auth generate`),
    WSK_CONFIG_FILE=~/.mlfn/local/wskprops wsk ...
    State lives in ~/.mlfn/local (MLFN_LOCAL_HOME overrides); without --port, the deploy
    commands use the controller of that folder.

    \b
    Examples:
      mlfn local up && mlfn deploy && mlfn invoke digits --image digit-3.png
      mlfn local up --port 3300 && mlfn status digits --port 3300
      mlfn local status -o json
      mlfn local down
    """


@local.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port on 127.0.0.1 (default 3233).")
@click.option("--foreground", is_flag=True, help="Run in this terminal (for debugging) instead of as a daemon.")
@click.option("--detach/--no-detach", default=True, help="Run as a background daemon (default).")
@click.option("--idle-seconds", type=float, default=600.0, show_default=True,
              help="Remove a warm action container after this long unused.")
@click.option("--auth", type=click.Choice(["guest", "generate"]), default=None,
              help="Which key the API accepts: OpenWhisk's well-known guest key, or a new private key written "
                   "to the state folder's wskprops (0600). Default: keep the folder's key (guest at first).")
@output_option
def up(port, foreground, detach, idle_seconds, auth, output):
    """Start the local controller (a background daemon; idempotent).

    \b
    Examples:
      mlfn local up
      mlfn local up --port 3300             # then: mlfn deploy --port 3300, mlfn status NAME --port 3300
      mlfn local up --foreground            # logs in this terminal, Ctrl-C stops it
      mlfn local up --auth generate         # a private key instead of the well-known guest key
    """
    from mlfn.output import log
    from mlfn.targets.local import daemon as lib

    st = lib.up(port=port, foreground=foreground or not detach, idle_seconds=idle_seconds, progress=log, auth=auth)
    emit(st, output, _text)


@local.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Check that the controller runs on this port (the one given to 'mlfn local up').")
@output_option
def down(port, output):
    """Stop the local controller and remove its action containers.

    \b
    Examples:
      mlfn local down
      mlfn local down --port 3300
    """
    from mlfn.targets.local import daemon as lib

    emit(lib.down(port=port), output, _text)


@local.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Check that the controller runs on this port (the one given to 'mlfn local up').")
@output_option
def status(port, output):
    """Is the local controller running, where, and how many functions and containers.

    \b
    Example:
      mlfn local status -o json
    """
    from mlfn.targets.local import daemon as lib

    emit(lib.status(port=port), output, _text)
