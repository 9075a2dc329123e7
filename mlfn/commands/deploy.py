"""`mlfn deploy`, `versions`, `status`, `traffic`, `promote`, `rollback`, `delete`, `render`.

Thin: parse, build TargetOptions (mlfn.commands.options.target_from), call one function
of mlfn.releases, render. The same commands drive every target (local, openwhisk, knative)."""
from __future__ import annotations

import click

from mlfn.commands.options import (config_option, dry_run_option, output_option, project_config, target_from,
                                   target_options)
from mlfn.output import Progress, emit, table


def _function(name, cfg) -> str:
    if name:
        return name
    if cfg.source is None:
        raise click.UsageError("Name the function, e.g. 'digits' (there is no mlfn.yaml here to take it from).")
    return cfg.name


class SplitType(click.ParamType):
    """One `vN=W` item (or a bare `vN` that takes the remainder)."""

    name = "vN=WEIGHT"

    def convert(self, value, param, ctx):
        from mlfn.traffic import TrafficError, version_number

        name, sep, w = str(value).partition("=")
        try:
            version_number(name.strip())
            if sep:
                int(w)
        except (TrafficError, ValueError):
            self.fail(f"'{value}' is not vN=WEIGHT (e.g. v3=90).", param, ctx)
        return str(value)


def _splits(ctx, param, value):
    from mlfn.traffic import TrafficError, parse_splits

    if not value:
        raise click.BadParameter("give at least one split, e.g. v3=90 v4=10.")
    try:
        return parse_splits(value)
    except TrafficError as e:
        raise click.BadParameter(str(e)) from None


def _alias_text(a, before: str = "") -> str:
    """`alias: weights`, with what this command replaced (`before`) when it moved the alias,
    and what `mlfn rollback` would restore."""
    from mlfn.traffic import format_weights

    line = f"{a.name}: {format_weights(a.weights)}"
    if before:
        line += f"   (before: {before})"
    if a.previous:
        line += f"   (rollback to: {format_weights(a.previous)})"
    if a.web_url:
        line += f"\n  web: {a.web_url}"
    return line


def _moved_text(o) -> str:
    """What traffic/promote/rollback print: the alias, notes of the alias policy, a dry run's requests."""
    from mlfn.traffic import format_weights

    before = format_weights(o.replaced) if o.replaced is not None else "no such alias"
    parts = [_alias_text(o.alias, before)] + [f"  note: {n}" for n in o.notes]
    return "\n".join(parts + ([_dry(o)] if o.dry_run else []))


def _trigger_text(t) -> str:
    """`name -> alias (rule R, active)` (OpenWhisk) or `name -> alias (broker B, type=T)` (Knative)."""
    d = t.detail
    if t.kind == "rule":
        how = f"rule {d.get('rule')}, {d.get('status') or '?'}" + (f", feed {d['feed']}" if d.get("feed") else "")
    else:
        how = ", ".join([f"broker {d.get('broker')}"] + [f"{k}={v}" for k, v in (d.get("filters") or {}).items()])
    return f"{t.name} -> {t.alias} ({how})"


def _dry(out) -> str:
    if not out.requests:
        return "Dry run: nothing was changed, and nothing would be (no requests to send)."
    lines = ["Dry run: nothing was changed. These requests would be sent:"]
    import json

    for r in out.requests:
        lines.append(f"  {r['method']} {r['url']}")
        if r.get("body") is not None:
            lines.append("    " + json.dumps(r["body"])[:2000])
    return "\n".join(lines)


@click.command()
@config_option
@target_options
@click.option("--alias", "-a", help="Route this alias to the new version (100%, or --weight).")
@click.option("--weight", "-w", type=click.IntRange(0, 100), help="Percent of the alias for the new version; "
              "the rest stays on what the alias routes to now (a canary).")
@click.option("--promote", is_flag=True, help="Move the alias (default one unless --alias) to 100% of the new version.")
@click.option("--push", metavar="REGISTRY/REPO", help="Push the image here and deploy it by digest "
              "(default: deploy.registry).")
@click.option("--web/--no-web", default=None, help="Export the alias as an OpenWhisk web action "
              "(default: deploy.openwhisk.web).")
@click.option("--web-secure", is_flag=True, default=None, help="Protect the web action with a generated "
              "X-Require-Whisk-Auth secret (printed once, here).")
@click.option("--trigger", "triggers", multiple=True, metavar="NAME|broker=B,type=T,...",
              help="Send events to the alias: an OpenWhisk trigger NAME (with a rule), or a Knative Trigger "
              "broker=B[,type=T,source=S,retry=N,backoffPolicy=P,backoffDelay=D,deadLetterSink=URL,name=N].")
@click.option("--feed", metavar="/NS/PKG/FEED", help="OpenWhisk: make --trigger a feed trigger of this feed "
              "action, e.g. /whisk.system/messaging/messageHubFeed.")
@click.option("--feed-param", "feed_params", multiple=True, metavar="KEY=VALUE", help="A --feed parameter.")
@dry_run_option("Print the requests that would change the platform; send none "
                "(the image is still built locally, but not pushed).")
@click.option("--rollout", is_flag=True, help="Then roll the new version out with the rollout: settings of mlfn.yaml "
              "(see 'mlfn rollout --help'; exit codes 4 rolled back, 5 aborted, 6 inconclusive).")
@output_option
def deploy(config_path, alias, weight, promote, push, web, web_secure, triggers, feed, feed_params, dry_run,
           rollout, output, **kw):
    """Build (if needed) and publish the function as a new immutable version vN.

    Traffic is untouched unless you ask: the FIRST version gets the default alias at
    100%; later versions only take traffic with --alias/--weight or --promote.
    Deploying identical content again creates no new version (safe to re-run in CI).

    \b
    Examples:
      mlfn deploy                                # local target, default alias on v1
      mlfn deploy --alias canary --weight 10     # canary: 10% on the new version
      mlfn deploy --promote                      # blue/green: default alias -> new version
      mlfn deploy -t openwhisk --push registry.example.com/digits --web
      mlfn deploy -t openwhisk --dry-run -o json # the REST calls, not sent
    """
    from mlfn import releases as lib

    cfg = project_config(config_path, required=True)
    progress = Progress(quiet=output == "json")
    if rollout:
        from mlfn.commands.rollout import deploy_rollout

        return deploy_rollout(cfg, target_from(kw, dry_run), alias, weight, promote, push=push, web=web,
                              require_whisk_auth=web_secure or None, output=output)
    out = lib.deploy(cfg, target_from(kw, dry_run), alias=alias, weight=weight, promote=promote, push=push, web=web,
                     require_whisk_auth=web_secure or None, triggers=triggers, feed=feed, feed_params=feed_params,
                     progress=progress)

    def text(o):
        v = o.version
        head = (f"{o.function} {v.name} {'created' if o.created else 'unchanged (identical content)'} on {o.target}"
                f"\n  image {o.image}")
        parts = [head] + ["  alias " + _alias_text(a) for a in o.aliases]
        parts += ["  trigger " + _trigger_text(t) for t in o.triggers]
        if o.web_secret:
            parts.append(f"  web secret (X-Require-Whisk-Auth, shown once): {o.web_secret}")
        if o.dry_run:
            parts.append(_dry(o))
        return "\n".join(parts)

    emit(out, output, text)


@click.command()
@click.argument("name", required=False)
@config_option
@target_options
@output_option
def versions(name, config_path, output, **kw):
    """List a function's versions, oldest first.

    \b
    Examples:
      mlfn versions digits
      mlfn versions digits -t openwhisk -o json
    """
    from mlfn import releases as lib

    cfg = project_config(config_path)
    out = lib.versions(_function(name, cfg), target_from(kw), cfg)
    emit(out, output, lambda vs: table([(v.name, v.created, v.quantization, (v.digest or "")[:19],
                                         (v.model_sha256 or "")[:12]) for v in vs],
                                       ["VERSION", "CREATED", "QUANT", "DIGEST", "MODEL"]))


@click.command()
@click.argument("name", required=False)
@config_option
@target_options
@output_option
def status(name, config_path, output, **kw):
    """Show aliases (with weights) and versions (image digest, model sha256, quantization).

    \b
    Examples:
      mlfn status digits
      mlfn status digits -o json | jq '.aliases'
    """
    from mlfn import releases as lib

    cfg = project_config(config_path)
    st = lib.status(_function(name, cfg), target_from(kw), cfg)

    def text(s):
        from mlfn.traffic import format_weights

        routed = {}
        for a in s.aliases:
            for v, w in a.weights.items():
                routed.setdefault(v, []).append(f"{a.name}:{w}%")
        out = [f"{s.function} on {s.target}", "", "ALIASES"]
        out += [table([(a.name, format_weights(a.weights), format_weights(a.previous or {}) or "-", len(a.history),
                        a.web_url or "") for a in s.aliases],
                      ["ALIAS", "TRAFFIC", "ROLLBACK TO", "HISTORY", "WEB URL"])]
        out += ["", "VERSIONS"]
        out += [table([(v.name, v.created, v.quantization, (v.digest or "")[:19], (v.model_sha256 or "")[:12],
                        " ".join(routed.get(v.name, []))) for v in s.versions],
                      ["VERSION", "CREATED", "QUANT", "DIGEST", "MODEL", "ROUTED"])]
        if s.triggers:
            out += ["", "TRIGGERS"] + ["  " + _trigger_text(t) for t in s.triggers]
        rollouts = [(a.name, r) for a in s.aliases for r in a.rollouts[-3:]]
        if rollouts:
            from mlfn.rollout.state import RolloutState

            out += ["", "ROLLOUTS (latest last; mlfn rollout status NAME)"]
            out += [f"  {RolloutState.from_dict(r).summary()}" for _, r in rollouts]
        return "\n".join(out)

    emit(st, output, text)


@click.command()
@click.argument("name")
@click.argument("splits", nargs=-1, type=SplitType(), callback=_splits, metavar="vN=WEIGHT...")
@click.option("--alias", "-a", default="default", show_default=True, help="Alias to change.")
@config_option
@target_options
@dry_run_option()
@output_option
def traffic(name, splits, alias, config_path, dry_run, output, **kw):
    """Set an alias's traffic split (weights are whole percents that sum to 100).

    One version may go without a weight: it takes the remainder.

    \b
    Examples:
      mlfn traffic digits v3=90 v4=10            # canary
      mlfn traffic digits v3=80 v4 --alias ab    # A/B: v4 gets 20
    """
    from mlfn import releases as lib

    out = lib.set_traffic(name, splits, alias=alias, options=target_from(kw, dry_run), cfg=project_config(config_path))
    emit(out, output, _moved_text)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--alias", "-a", default="default", show_default=True, help="Alias to move.")
@config_option
@target_options
@dry_run_option()
@output_option
def promote(name, version, alias, config_path, dry_run, output, **kw):
    """Blue/green: move an alias to 100% of one version in one update.

    \b
    Examples:
      mlfn promote digits v4
      mlfn promote digits v4 --alias stable
    """
    from mlfn import releases as lib

    out = lib.promote(name, version, alias=alias, options=target_from(kw, dry_run), cfg=project_config(config_path))
    emit(out, output, _moved_text)


@click.command()
@click.argument("name")
@click.option("--alias", "-a", default="default", show_default=True, help="Alias to roll back.")
@config_option
@target_options
@dry_run_option()
@output_option
def rollback(name, alias, config_path, dry_run, output, **kw):
    """Return an alias to the assignment it had before its last change.

    The history is kept on the platform, so any machine can roll back.

    \b
    Examples:
      mlfn rollback digits
      mlfn rollback digits --alias canary -o json
    """
    from mlfn import releases as lib

    out = lib.rollback(name, alias=alias, options=target_from(kw, dry_run), cfg=project_config(config_path))
    emit(out, output, _moved_text)


@click.command()
@click.argument("name")
@click.argument("version", required=False)
@click.option("--force", is_flag=True, help="Also delete the aliases that route to this version.")
@click.option("--yes", "-y", is_flag=True, help="Delete the whole function without asking.")
@config_option
@target_options
@dry_run_option()
@output_option
def delete(name, version, force, yes, config_path, dry_run, output, **kw):
    """Delete one version, or the whole function (aliases first, then versions).

    A version that an alias routes traffic to is kept unless --force (then those aliases
    go too); a 0% entry for it is simply dropped from a split. Deleting the whole function
    asks on a terminal and needs --yes elsewhere.

    \b
    Examples:
      mlfn delete digits v2
      mlfn delete digits --yes      # everything
    """
    from mlfn import releases as lib

    if version is None and not dry_run and not yes:
        _confirm_delete_all(name)
    out = lib.delete(name, version, force=force, options=target_from(kw, dry_run), cfg=project_config(config_path))
    emit(out, output, lambda o: "\n".join(["Deleted: " + ", ".join(o.deleted)] + [f"  note: {n}" for n in o.notes]
                                          + ([_dry(o)] if o.dry_run else [])))


def _confirm_delete_all(name: str) -> None:
    """Deleting every version and alias asks on a terminal; elsewhere it needs --yes."""
    import sys

    if not sys.stdin.isatty():
        raise click.UsageError(f"'mlfn delete {name}' deletes every version and alias of {name}; "
                               "pass --yes to confirm (or run it on a terminal to be asked).")
    if not click.confirm(f"Delete every version and alias of {name}?", default=False, err=True):
        raise click.Abort()


@click.command()
@config_option
@target_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="deploy", show_default=True,
              help="Folder to write the manifests into.")
@click.option("--image", help="Image reference to put in the manifests (default: build the function).")
@click.option("--trigger", "triggers", multiple=True, metavar="broker=B,type=T,...",
              help="Knative: also write a Trigger to the function (as for deploy).")
@click.option("--api", "api", metavar="BASEPATH", help="Write only the API gateway config for BASEPATH (OpenWhisk: "
              "api.json for 'wsk api create --config-file').")
@output_option
def render(config_path, out_dir, image, triggers, api, output, **kw):
    """Write the platform's own manifests for GitOps (OpenWhisk: a wskdeploy manifest.yaml).

    \b
    Examples:
      mlfn render --target openwhisk --out deploy/
      mlfn render -t knative --image registry.example.com/digits@sha256:...
      mlfn render --target openwhisk --api /digits --out deploy/
    """
    from mlfn import releases as lib

    cfg = project_config(config_path, required=True)
    files = lib.render(cfg, out_dir, target_from(kw), image=image, progress=Progress(quiet=output == "json"),
                       triggers=triggers, api=api)
    emit({"files": files}, output, lambda r: "\n".join(r["files"]))
