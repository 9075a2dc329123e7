"""What the `mlfn rollout` commands call: start, resume, status, abort. Each opens the
target (mlfn.releases.open_target), works on one alias and returns a dataclass.

    from mlfn.rollout import start, RolloutSettings
    result = start(cfg, TargetOptions("local"), "digits", "v3", RolloutSettings(steps=[10, 50, 100]))
    result.exit_code   # 0 promoted, 4 rolled back, 5 aborted, 6 inconclusive
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from mlfn.aliases import alias_key, routed
from mlfn.errors import NotFoundError, TargetError
from mlfn.lifecycle import Lifecycle
from mlfn.rollout.load import SyntheticLoad, load_inputs
from mlfn.rollout.metrics import ActivationMetrics, PrometheusMetrics
from mlfn.rollout.quality import load_probe
from mlfn.rollout.runner import EXIT_CODES, RolloutResult, RolloutRun
from mlfn.rollout.settings import RolloutSettings
from mlfn.rollout.state import (ABORTED, PROMOTED, RUNNING, RolloutState, active, now_iso, rollouts_of, started_by,
                                with_state)
from mlfn.targets.interface import Target

Progress = Callable[[str], None]
ABORT_WRITES = 3


def quiet(message: str) -> None:
    pass


@dataclass
class RolloutStatus:
    function: str
    alias: str
    weights: dict
    active: Optional[dict] = None  # RolloutState.to_dict() of the rollout in progress
    history: list = field(default_factory=list)  # finished rollouts, oldest first


def metrics_for(target: Target, function: str, settings: RolloutSettings, namespace: Optional[str] = None):
    """Prometheus when --prometheus is given (Knative), else the platform's activation records."""
    if settings.prometheus:
        from mlfn.targets.knative.codec import revision_name
        from mlfn.traffic import version_number

        return PrometheusMetrics(settings.prometheus, namespace or "default", function,
                                 lambda v: revision_name(function, version_number(v)), settings.queries)
    return ActivationMetrics(target, function)


def _alias(target: Target, function: str, alias: Optional[str]):
    key = alias_key(function, alias)
    state = target.read(function)
    current = state.aliases.get(key)
    if current is None:
        raise NotFoundError(f"Alias '{key}' of '{function}' does not exist; see 'mlfn status {function}'.")
    return state, key, current


def begin(target: Target, function: str, candidate: str, settings: RolloutSettings) -> RolloutState:
    """Record a new rollout on the alias (refused while one runs); None when the alias already
    routes 100% to the candidate (nothing to roll out)."""
    state, key, current = _alias(target, function, settings.alias)
    running = active(current)
    if running is not None:
        raise TargetError(f"Alias '{key}' of '{function}' already has a rollout in progress ({running.summary()}); "
                          f"see 'mlfn rollout status {function}', or 'mlfn rollout resume|abort {function}'.")
    if state.version(candidate) is None:
        raise NotFoundError(f"Version {candidate} of '{function}' does not exist; see 'mlfn versions {function}'.")
    live = routed(current.weights)
    if live == [candidate]:
        return None
    if len(live) != 1:
        raise TargetError(f"Alias '{key}' of '{function}' splits traffic ({current.weights}); a rollout starts "
                          f"from one stable version: promote or roll back first.")
    rollout = RolloutState.new(function, key, candidate, live[0], settings)
    Lifecycle(target).route_rollout(function, key, current.weights, with_state(current, rollout))
    mine = active(target.read(function).aliases.get(key))
    if mine is None or mine.id != rollout.id:
        raise TargetError(f"Another rollout of alias '{key}' of '{function}' started at the same time; "
                          f"see 'mlfn rollout status {function}'.")
    return rollout


def run(target: Target, rollout: RolloutState, progress: Progress = quiet, namespace: Optional[str] = None,
        metrics=None) -> RolloutResult:
    """Run (or continue) a recorded rollout until it ends; `metrics` defaults to metrics_for()."""
    settings = rollout.rollout_settings()
    probe = load_probe(settings.probe, settings.probe_task) if settings.probe else None
    metrics = metrics or metrics_for(target, rollout.function, settings, namespace)
    runner = RolloutRun(Lifecycle(target), rollout, metrics, probe, progress)
    load = (SyntheticLoad(target, rollout.function, rollout.alias, load_inputs(settings.load), settings.rate)
            if settings.load else contextlib.nullcontext())
    with load:
        return runner.run()


def start(target: Target, function: str, candidate: str, settings: RolloutSettings, progress: Progress = quiet,
          namespace: Optional[str] = None) -> RolloutResult:
    settings.check()
    if settings.probe:
        load_probe(settings.probe, settings.probe_task)  # a bad probe is refused before anything is written
    if settings.load:
        load_inputs(settings.load)
    rollout = begin(target, function, candidate, settings)
    if rollout is None:
        key = alias_key(function, settings.alias)
        progress(f"Alias '{key}' already routes 100% to {candidate}; nothing to roll out.")
        return RolloutResult(function, key, candidate, candidate, PROMOTED, 0, "already at 100%", settings.steps,
                             len(settings.steps) - 1, {candidate: 100}, started_by(), now_iso(), now_iso())
    progress(f"Rolling out {candidate} over {rollout.stable} on alias '{rollout.alias}': steps "
             f"{', '.join(f'{s}%' for s in settings.steps)} every {settings.interval:g}s")
    return run(target, rollout, progress, namespace)


def resume(target: Target, function: str, alias: Optional[str] = None, progress: Progress = quiet,
           namespace: Optional[str] = None) -> RolloutResult:
    _, key, current = _alias(target, function, alias)
    rollout = active(current)
    if rollout is None:
        raise TargetError(f"Alias '{key}' of '{function}' has no rollout in progress to resume; "
                          f"see 'mlfn rollout status {function}'.")
    return run(target, rollout, progress, namespace)


def status(target: Target, function: str, alias: Optional[str] = None) -> RolloutStatus:
    _, key, current = _alias(target, function, alias)
    states = rollouts_of(current)
    running = active(current)
    return RolloutStatus(function, key, dict(current.weights), running.to_dict() if running else None,
                         [r.to_dict() for r in states if running is None or r.id != running.id])


def abort(target: Target, function: str, alias: Optional[str] = None, reason: str = "",
          settle: float = 1.0) -> RolloutResult:
    """Traffic back on the stable version now, and the rollout marked aborted (a running
    `mlfn rollout` process sees it at its next check and stops). A platform has no
    conditional writes, so a step the runner was writing at the same moment could replace
    the abort: after `settle` seconds the abort is read back and written again if so."""
    _, key, current = _alias(target, function, alias)
    rollout = active(current)
    if rollout is None:
        raise TargetError(f"Alias '{key}' of '{function}' has no rollout in progress to abort; "
                          f"see 'mlfn rollout status {function}'.")
    rollout.finish(ABORTED, reason or f"aborted by {started_by()}")
    weights = {rollout.stable: 100}
    for _ in range(ABORT_WRITES):
        Lifecycle(target).route_rollout(function, key, weights, with_state(current, rollout))
        time.sleep(settle)
        current = target.read(function).aliases.get(key)
        ours = next((r for r in rollouts_of(current) if r.id == rollout.id), None)
        if ours is None or ours.status != RUNNING:
            break
    return RolloutResult(function, key, rollout.candidate, rollout.stable, ABORTED, EXIT_CODES[ABORTED],
                         rollout.reason, rollout.steps, rollout.step, weights, rollout.started_by,
                         rollout.started_at, rollout.finished_at, rollout.checks)


def settings_for(cfg, flags: dict) -> RolloutSettings:
    """RolloutSettings from mlfn.yaml's `rollout:` section under the flags (text forms, None =
    not given); paths from the file are relative to the project folder."""
    from mlfn.rollout.settings import resolve

    settings = resolve(cfg.rollout if cfg is not None else None, flags)
    for key in ("probe", "load"):
        if flags.get(key) is None and getattr(settings, key) and cfg is not None:
            setattr(settings, key, cfg.resolve(getattr(settings, key)))
    return settings


def namespace_for(cfg, options) -> Optional[str]:
    """The namespace the PromQL templates get: --namespace, else deploy.knative.namespace."""
    return (options.namespace if options is not None else None) or (
        cfg.deploy.knative.namespace if cfg is not None else None)


@dataclass
class DeployRollout:
    """`mlfn deploy --rollout`: the new version, then its rollout."""

    deploy: object  # mlfn.releases.DeployOutcome
    rollout: RolloutResult

    @property
    def exit_code(self) -> int:
        return self.rollout.exit_code


def deploy_and_roll_out(cfg, options, settings: RolloutSettings, progress: Progress = quiet,
                        **deploy_options) -> DeployRollout:
    """Publish the next version (traffic untouched; a first version takes the default alias
    and there is nothing to roll out), then roll it out on settings.alias."""
    from mlfn import releases
    from mlfn.errors import ConfigError

    if options.dry_run:
        raise ConfigError("--rollout moves traffic over minutes; it cannot be a --dry-run (drop one of them).")
    settings.check()
    if settings.probe:
        load_probe(settings.probe, settings.probe_task)
    deployed = releases.deploy(cfg, options, progress=progress, **deploy_options)
    target = releases.open_target(cfg, options)
    result = start(target, cfg.name, deployed.version.name, settings, progress, namespace_for(cfg, options))
    return DeployRollout(deployed, result)
