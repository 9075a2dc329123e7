"""Versions and aliases on one target: the alias policy (mlfn.aliases) applied through the
Target interface. `Lifecycle(target, recorder)` is what mlfn.releases runs for each command
once it has opened the target; tests drive targets through it too.

    lifecycle = Lifecycle(target)                     # or Lifecycle(target, Recorder()) for a dry run
    lifecycle.publish(spec)                         # vN; the first version takes the default alias
    lifecycle.set_traffic("digits", "default", {"v1": 90, "v2": 10})
    lifecycle.promote("digits", "v2"); lifecycle.rollback("digits")
    lifecycle.delete("digits", "v1", force=True)

Every outcome carries the requests a dry run recorded (nothing is sent then).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mlfn import aliases as policy
from mlfn.targets.interface import (DEFAULT_ALIAS, Alias, AliasRecord, Progress, State, Status, Target, Version,
                                    VersionSpec, quiet)
from mlfn.targets.recording import Recorder
from mlfn.traffic import format_weights, validate_weights, version_number


@dataclass
class PublishOutcome:
    function: str
    version: Version
    created: bool  # False when identical content already existed
    aliases: list = field(default_factory=list)  # list[Alias] after the deploy
    touched: Optional[Alias] = None  # the alias this deploy was asked to move
    web_secret: Optional[str] = None  # a generated require-whisk-auth secret, shown once
    requests: list = field(default_factory=list)  # what a dry run would send


@dataclass
class TrafficOutcome:
    function: str
    alias: Alias
    replaced: Optional[dict] = None  # the assignment this command replaced (None: the alias is new)
    dry_run: bool = False
    requests: list = field(default_factory=list)
    web_secret: Optional[str] = None
    notes: list = field(default_factory=list)  # what the alias policy skipped or pruned, in words


@dataclass
class DeleteOutcome:
    function: str
    deleted: list
    dry_run: bool = False
    requests: list = field(default_factory=list)
    notes: list = field(default_factory=list)


class Lifecycle:
    def __init__(self, target: Target, recorder: Optional[Recorder] = None):
        self.target = target
        self.recorder = recorder  # the one the target's client records into (a dry run), or None

    @property
    def _requests(self) -> list:
        return list(self.recorder.requests) if self.recorder else []

    # ---- reading ----------------------------------------------------------------------------

    def status(self, function: str) -> Status:
        st = self.target.read(function)
        return Status(function=function, target=self.target.name, versions=st.versions,
                      aliases=[st.aliases[n] for n in sorted(st.aliases)], url=st.url)

    def versions(self, function: str) -> list:
        return self.target.read(function).versions

    # ---- publishing -------------------------------------------------------------------------

    def publish(self, spec: VersionSpec, *, alias: Optional[str] = None, weight: Optional[int] = None,
                promote: bool = False, web: bool = False, require_auth: bool = False,
                progress: Progress = quiet) -> PublishOutcome:
        """Publish spec as a version; move an alias only when asked (or for a first version)."""
        state = self.target.read(spec.function, missing_ok=True)
        published = self.target.publish(spec, progress=progress)
        version = published.version
        if state.known and state.version(version.name) is None:
            state.versions.append(version)
        asked = promote or weight is not None or alias is not None or web
        record = (_asked_alias(state, version.name, alias, weight, promote, web, require_auth) if asked
                  else policy.first_version(state, version.name))
        aliases = dict(state.aliases)
        out = PublishOutcome(spec.function, version, published.created)
        if record is not None:
            progress(f"Routing alias '{record.name}': {format_weights(record.weights)}"
                     + ("" if asked else " (first version)"))
            written = self.target.write_alias(spec.function, record, progress)
            aliases[record.name] = written.alias
            out.web_secret = written.web_secret
            out.touched = written.alias if asked else None
        out.aliases = [aliases[n] for n in sorted(aliases)]
        out.requests = self._requests
        return out

    # ---- aliases ----------------------------------------------------------------------------

    def _write(self, function: str, record: AliasRecord, state: State, notes: list) -> TrafficOutcome:
        current = state.aliases.get(record.name)
        written = self.target.write_alias(function, record)
        return TrafficOutcome(function, written.alias, replaced=dict(current.weights) if current else None,
                              dry_run=self.recorder is not None, requests=self._requests,
                              web_secret=written.web_secret, notes=notes)

    def _state(self, function: str) -> State:
        return self.target.read(function, missing_ok=self.recorder is not None)

    def set_traffic(self, function: str, alias: Optional[str], weights: dict, web: Optional[bool] = None,
                    require_auth: bool = False) -> TrafficOutcome:
        weights = validate_weights(dict(weights))
        state = self._state(function)
        record = policy.assign(state, policy.alias_key(function, alias), weights, web=web, require_auth=require_auth)
        return self._write(function, record, state, [])

    def route_rollout(self, function: str, alias: Optional[str], weights: dict, rollouts: list) -> TrafficOutcome:
        """Set an alias's split and its rollout states in one write (mlfn.rollout)."""
        weights = validate_weights(dict(weights))
        state = self._state(function)
        record = policy.assign(state, policy.alias_key(function, alias), weights, rollouts=rollouts)
        return self._write(function, record, state, [])

    def promote(self, function: str, version: str, alias: Optional[str] = DEFAULT_ALIAS) -> TrafficOutcome:
        """Blue/green: the alias at 100% of one version, in one update."""
        version_number(version)
        return self.set_traffic(function, alias, {version: 100})

    def rollback(self, function: str, alias: Optional[str] = DEFAULT_ALIAS) -> TrafficOutcome:
        state = self._state(function)
        plan = policy.rollback(state, policy.alias_key(function, alias))
        return self._write(function, plan.record, state, plan.notes)

    # ---- deleting ---------------------------------------------------------------------------

    def delete(self, function: str, version: Optional[str] = None, force: bool = False) -> DeleteOutcome:
        """One version (aliases routing traffic to it block it unless force; then they go
        first), or the whole function."""
        state = self.target.read(function)
        if version is None:
            return DeleteOutcome(function, self.target.delete_function(function, state),
                                 self.recorder is not None, self._requests)
        version_number(version)
        plan = policy.delete_version(state, version, force)
        deleted = []
        for name in plan.remove:  # aliases move (or go) before the version goes
            self.target.delete_alias(function, name)
            deleted.append(f"{function}/{name}")
        for record in plan.write:
            self.target.write_alias(function, record)
        self.target.delete_version(function, version)
        deleted.append(f"{function}/{version}")
        return DeleteOutcome(function, deleted, self.recorder is not None, self._requests, plan.notes)


def _asked_alias(state: State, version: str, alias: Optional[str], weight: Optional[int], promote: bool,
                 web: bool, require_auth: bool) -> AliasRecord:
    """The alias record a deploy with --alias/--weight/--promote/--web writes."""
    key = policy.alias_key(state.function, alias)
    current = state.aliases.get(key)
    if promote or (alias is not None and weight is None):
        weights = {version: 100}
    elif weight is not None:
        base = current or state.aliases.get(DEFAULT_ALIAS)
        weights = policy.split_for(version, weight, base.weights if base else None)
    else:  # only --web: export the alias as it is (or create it on this version)
        weights = current.weights if current else {version: 100}
    return policy.assign(state, key, weights, web=web or None, require_auth=require_auth)
