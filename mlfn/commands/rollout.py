"""`mlfn rollout NAME vN`, `mlfn rollout status|abort|resume NAME`: progressive delivery
(mlfn.rollout). Thin: parse, call one function of mlfn.rollout, render, exit with the
rollout's code."""
from __future__ import annotations

import sys

import click

from mlfn.commands.options import config_option, output_option, project_config, target_from, target_options
from mlfn.output import emit, log

EXIT_HELP = """\b
Exit codes:
  0  promoted: the candidate passed every step and takes 100%
  4  rolled back: a gate failed (error rate, p99, quality probe, a hook); traffic is on stable
  5  aborted: 'mlfn rollout abort' was run (from anywhere); traffic is on stable
  6  inconclusive: too few requests within --max-wait; traffic is on stable
  1/2  an error (platform, usage) before or while running"""


def rollout_settings_options(f):
    """The settings of a rollout (defaults from the `rollout:` section of mlfn.yaml)."""
    opts = [
        click.option("--steps", help="Candidate percents, rising, ending at 100 (default 10,25,50,100)."),
        click.option("--interval", help="Time between checks, e.g. 60s (default 60s)."),
        click.option("--max-error-rate", help="Most failed requests of the candidate's own, e.g. 1% (default 1%)."),
        click.option("--max-p99", help="Highest 99th percentile latency of the candidate, e.g. 250ms (default: none)."),
        click.option("--min-requests", type=int, help="Fewer candidate requests in a window is inconclusive "
                     "(default 50)."),
        click.option("--failures", type=int, help="Failed checks before rolling back (default 2)."),
        click.option("--max-wait", help="How long a step may stay inconclusive before giving up (default 10m)."),
        click.option("--alias", "-a", help="The alias to roll out on (default: the default alias)."),
        click.option("--probe", type=click.Path(exists=True), help="Labelled probe set sent to the candidate and "
                     "to stable before each traffic increase: .npz (x, y) or an image folder with label sub-folders."),
        click.option("--max-accuracy-drop", type=float, help="Most accuracy points the candidate may lose against "
                     "stable on the probe (MSE for regression; default 1)."),
        click.option("--min-agreement", help="Probe without labels: least share of top-1 answers equal to "
                     "stable's, e.g. 98%."),
        click.option("--load", type=click.Path(exists=True, file_okay=False), help="Send synthetic requests "
                     "through the alias, from this folder of inputs (*.json, images, *.npz)."),
        click.option("--rate", type=float, help="Synthetic requests per second (default 20)."),
        click.option("--pre-step", help="Shell command before each traffic increase; non-zero fails the step."),
        click.option("--post-step", help="Shell command after each traffic increase; non-zero fails the step."),
        click.option("--prometheus", metavar="URL", help="Prometheus to read per-revision metrics from (Knative)."),
        click.option("--vs-stable", "compare_stable", is_flag=True, default=None, help="The error-rate and p99 "
                     "thresholds bound how much worse than the stable version (same window) the candidate may be."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


SETTING_NAMES = ("steps", "interval", "max_error_rate", "max_p99", "min_requests", "failures", "max_wait", "alias",
                 "probe", "max_accuracy_drop", "min_agreement", "load", "rate", "pre_step", "post_step",
                 "prometheus", "compare_stable")


def take_settings(kw: dict) -> dict:
    """The rollout setting flags taken out of a command's **kw."""
    return {name: kw.pop(name) for name in SETTING_NAMES}


def render_result(result, output: str) -> None:
    """Print the result (text or one JSON document) and exit with the rollout's code."""
    def text(r):
        from mlfn.traffic import format_weights

        return (f"{r.function}: rollout of {r.candidate} over {r.stable} on alias '{r.alias}' {r.status.upper()}"
                + (f": {r.reason}" if r.reason else "") + f"\n  alias {r.alias}: {format_weights(r.weights)}")

    emit(result, output, text)
    if result.exit_code:
        sys.exit(result.exit_code)


def deploy_rollout(cfg, options, alias, weight, promote, output: str, **deploy_options) -> None:
    """`mlfn deploy --rollout`: the settings come from mlfn.yaml; --alias picks the alias."""
    from mlfn import rollout as lib

    if weight is not None or promote:
        raise click.UsageError("--rollout moves the traffic itself; drop --weight/--promote.")
    settings = lib.api.settings_for(cfg, {"alias": alias})
    out = lib.api.deploy_and_roll_out(cfg, options, settings, progress=log, **deploy_options)
    if output == "json":
        emit(out, output)
    else:
        v = out.deploy.version
        click.echo(f"{cfg.name} {v.name} {'created' if out.deploy.created else 'unchanged'} on {out.deploy.target}")
        render_result(out.rollout, "text")
    if out.exit_code:
        sys.exit(out.exit_code)


class RolloutGroup(click.Group):
    """`mlfn rollout NAME vN ...` starts a rollout; `status|abort|resume NAME` act on one."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group(cls=RolloutGroup, epilog=EXIT_HELP)
def rollout():
    """Progressive delivery: move an alias to a new version in steps, judged on the new
    version's OWN error rate and latency and on its answers to a probe set; promote it, or
    send the traffic back to the stable version.

    \b
    Examples:
      mlfn rollout digits v3 --steps 10,25,50,100 --interval 60s \\
          --max-error-rate 1% --max-p99 250ms --min-requests 50 --failures 2 \\
          --probe samples/digits/validation.npz --max-accuracy-drop 1
      mlfn rollout status digits      # from any machine
      mlfn rollout abort digits       # traffic back on stable now
      mlfn rollout resume digits      # after an interrupted run
    """


@rollout.command("start", epilog=EXIT_HELP)
@click.argument("name")
@click.argument("version")
@rollout_settings_options
@config_option
@target_options
@output_option
def start(name, version, config_path, output, **kw):
    """Roll VERSION of function NAME out on an alias (the same as 'mlfn rollout NAME VERSION').

    \b
    Examples:
      mlfn rollout start digits v3 --steps 10,50,100 --interval 30s --max-error-rate 1%
      mlfn rollout start digits v3 --probe validation.npz --max-accuracy-drop 1 -o json
    """
    from mlfn import rollout as lib
    from mlfn.releases import open_target

    cfg = project_config(config_path)
    settings = lib.api.settings_for(cfg, take_settings(kw))
    options = target_from(kw)
    result = lib.start(open_target(cfg, options), name, version, settings, progress=log,
                       namespace=lib.api.namespace_for(cfg, options))
    render_result(result, output)


@rollout.command("resume", epilog=EXIT_HELP)
@click.argument("name")
@click.option("--alias", "-a", help="The alias (default: the default alias).")
@config_option
@target_options
@output_option
def resume(name, alias, config_path, output, **kw):
    """Continue an interrupted rollout from its recorded step, with its recorded settings.

    \b
    Example:
      mlfn rollout resume digits          # after the CI runner that started it died
    """
    from mlfn import rollout as lib
    from mlfn.releases import open_target

    cfg = project_config(config_path)
    options = target_from(kw)
    result = lib.resume(open_target(cfg, options), name, alias, progress=log,
                        namespace=lib.api.namespace_for(cfg, options))
    render_result(result, output)


@rollout.command("abort", epilog=EXIT_HELP)
@click.argument("name")
@click.option("--alias", "-a", help="The alias (default: the default alias).")
@config_option
@target_options
@output_option
def abort(name, alias, config_path, output, **kw):
    """Send the alias back to its stable version now and mark the rollout aborted (a running
    'mlfn rollout' stops at its next check, with exit code 5).

    \b
    Example:
      mlfn rollout abort digits --alias default
    """
    from mlfn import rollout as lib
    from mlfn.releases import open_target

    cfg = project_config(config_path)
    result = lib.abort(open_target(cfg, target_from(kw)), name, alias)
    result.exit_code = 0  # the abort itself succeeded
    render_result(result, output)


@rollout.command("status")
@click.argument("name")
@click.option("--alias", "-a", help="The alias (default: the default alias).")
@config_option
@target_options
@output_option
def status(name, alias, config_path, output, **kw):
    """The rollout in progress (step, gate results) and the last finished ones.

    \b
    Example:
      mlfn rollout status digits -o json
    """
    from mlfn import rollout as lib
    from mlfn.releases import open_target

    cfg = project_config(config_path)
    st = lib.status(open_target(cfg, target_from(kw)), name, alias)
    emit(st, output, status_text)


def status_text(st) -> str:
    from mlfn.rollout.state import RolloutState
    from mlfn.traffic import format_weights

    out = [f"{st.function} alias {st.alias}: {format_weights(st.weights)}"]
    if st.active:
        run = RolloutState.from_dict(st.active)
        out += [f"in progress: {run.summary()}"] + [f"  {_check_line(c)}" for c in run.checks[-10:]]
    else:
        out.append("no rollout in progress")
    out += [f"earlier: {RolloutState.from_dict(r).summary()}" for r in reversed(st.history)]
    return "\n".join(out)


def _check_line(check: dict) -> str:
    from mlfn.rollout.state import Check

    return Check(**check).line()
