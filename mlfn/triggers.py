"""Triggers of a function, above the platforms: what `mlfn deploy --trigger/--feed`,
`mlfn status`, `mlfn delete` and `mlfn render` do with them. The platform side is
`mlfn.targets.events.EventWiring` (OpenWhisk/local: trigger + rule; Knative: a Trigger).

    specs = trigger_specs(("uploads",), feed=None, feed_params=())
    wire(target, "digits", "canary", specs)      # [TriggerRecord]"""
from __future__ import annotations

from typing import Optional

from mlfn.targets.events import TriggerRecord, parse_trigger
from mlfn.targets.interface import DEFAULT_ALIAS, Progress, Target, quiet


def trigger_specs(triggers: tuple, feed: Optional[str] = None, feed_params: tuple = ()) -> list:
    """`--trigger` values (with `--feed`, `--feed-param`) -> [TriggerSpec]; a ConfigError
    naming the option when one is malformed, before anything is built or sent."""
    from mlfn.errors import ConfigError

    if (feed or feed_params) and len(triggers) != 1:
        raise ConfigError("--feed and --feed-param need exactly one --trigger NAME: the feed trigger to create.")
    return [parse_trigger(t, feed, tuple(feed_params)) for t in triggers]


def wire(target: Target, function: str, alias: Optional[str], specs: list, progress: Progress = quiet) -> list:
    """Create (or update) each trigger, bound to `alias` (None: the default alias)."""
    if not specs:
        return []
    wiring = target.event_wiring()
    return [wiring.apply(function, alias or DEFAULT_ALIAS, s, progress) for s in specs]


def function_triggers(target: Target, function: str) -> list:
    """[TriggerRecord] of `function` on the target."""
    return target.event_wiring().list(function)


def unwire(target: Target, function: str, progress: Progress = quiet) -> list:
    """Delete every trigger of `function`; their names."""
    return target.event_wiring().delete(function, progress)


def render_triggers(target: Target, function: str, alias: Optional[str], specs: list, out_dir: str) -> list:
    """The platform's manifests for the triggers (Knative: one Trigger YAML each)."""
    if not specs:
        return []
    wiring = target.event_wiring()
    return [p for s in specs for p in wiring.render(function, alias or DEFAULT_ALIAS, s, out_dir)]


__all__ = ["TriggerRecord", "trigger_specs", "wire", "function_triggers", "unwire", "render_triggers"]
