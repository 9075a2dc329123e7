"""The alias policy, written once for every target (docs/architecture.md, "Versions and
aliases"). Pure functions: they read a `State` and say which `AliasRecord`s to write.

- the first version of a function takes the default alias at 100%;
- a canary gives the new version W% and shares the rest among what the alias routes to now;
- every change pushes the assignment it replaced onto the alias's history (at most
  HISTORY_LIMIT entries); rollback pops it;
- history entries that name deleted versions are skipped on rollback and pruned when a
  version is deleted, with a note saying so, so no alias state can block the user.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mlfn.errors import NotFoundError, TargetError
from mlfn.targets.interface import DEFAULT_ALIAS, AliasRecord, State
from mlfn.traffic import TrafficError, format_weights, validate_weights, version_number

HISTORY_LIMIT = 20


def alias_key(function: str, alias: Optional[str]) -> str:
    """The default alias is "default"; the function's own name means it too."""
    return DEFAULT_ALIAS if alias in (None, "", DEFAULT_ALIAS, function) else alias


def routed(weights: dict) -> list:
    return [v for v, w in (weights or {}).items() if w > 0]


def check_routable(state: State, weights: dict) -> None:
    """Every version with a weight must exist (not checkable when the state is unknown)."""
    if not state.known:
        return
    known = [v.name for v in state.versions]
    missing = [v for v in routed(weights) if v not in known]
    if missing:
        raise NotFoundError(f"{', '.join(missing)} of '{state.function}' {'does' if len(missing) == 1 else 'do'} not "
                            f"exist; existing versions: {', '.join(sorted(known, key=version_number)) or 'none'}.")


def first_version(state: State, version: str) -> Optional[AliasRecord]:
    """The default alias at 100% of the first version; None when the function has aliases."""
    if state.aliases:
        return None
    return AliasRecord(DEFAULT_ALIAS, {version: 100})


def assign(state: State, alias: str, weights: dict, web: Optional[bool] = None,
           require_auth: bool = False, rollouts: Optional[list] = None) -> AliasRecord:
    """Point alias at weights; the assignment it replaces goes onto its history. The alias's
    rollout states are kept, or replaced by `rollouts` when given."""
    weights = validate_weights(dict(weights))
    check_routable(state, weights)
    current = state.aliases.get(alias)
    history = list(current.history) if current else []
    if current and current.weights and current.weights != weights:
        history.append(dict(current.weights))
    kept = list(current.rollouts) if current else []
    return AliasRecord(alias, weights, history[-HISTORY_LIMIT:],
                       web=bool(current and current.web) if web is None else web, require_auth=require_auth,
                       rollouts=kept if rollouts is None else list(rollouts))


def split_for(new: str, weight: int, current: Optional[dict]) -> dict:
    """The alias assignment after giving `new` weight%: the rest is shared by the versions the
    alias routes to now, in proportion (largest remainder), e.g. {v1: 100} + v2=10 -> v1=90 v2=10."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise TrafficError(f"--weight {weight!r} must be a whole number from 0 to 100.")
    if weight == 100:
        return {new: 100}
    others = {v: w for v, w in (current or {}).items() if v != new and w > 0}
    if not others and (current or {}).get(new):
        raise TrafficError(f"The alias already routes only to {new}, so no other version would take the remaining "
                           f"{100 - weight}%; a canary needs new content (a new version), or drop --weight.")
    if not others:
        raise TrafficError(f"Nothing else routes the remaining {100 - weight}%; deploy without --weight, "
                           f"or use --weight 100 / --promote.")
    rest, total = 100 - weight, sum(others.values())
    shares = {v: rest * w // total for v, w in others.items()}
    remainders = sorted(others, key=lambda v: -(rest * others[v] % total))
    for v in remainders[: rest - sum(shares.values())]:
        shares[v] += 1
    out = {v: s for v, s in shares.items() if s > 0}
    out[new] = weight
    return validate_weights(out)


@dataclass
class Rollback:
    record: AliasRecord
    replaced: dict  # the assignment this rollback replaced
    notes: list = field(default_factory=list)  # skipped history entries, said in words


def rollback(state: State, alias: str) -> Rollback:
    """The alias back at its latest earlier assignment whose versions all still exist."""
    current = state.aliases.get(alias)
    if current is None:
        raise NotFoundError(f"Alias '{alias}' of '{state.function}' does not exist; see 'mlfn status "
                            f"{state.function}'.")
    history = list(current.history)
    notes = []
    existing = {v.name for v in state.versions}
    while history:
        previous = history.pop()
        gone = [v for v in routed(previous) if v not in existing] if state.known else []
        if previous == current.weights:  # no change to go back to (e.g. left behind by pruning)
            continue
        if not gone:
            record = AliasRecord(alias, validate_weights(dict(previous)), history, web=current.web,
                                 rollouts=list(current.rollouts))
            return Rollback(record, dict(current.weights), notes)
        notes.append(f"Skipped the earlier assignment {format_weights(previous)} of alias '{alias}': "
                     f"{', '.join(gone)} {'was' if len(gone) == 1 else 'were'} deleted.")
    raise TargetError(f"Alias '{alias}' of '{state.function}' has no earlier assignment to roll back to"
                      + (f" ({len(notes)} named deleted versions)." if notes else "."))


@dataclass
class VersionDelete:
    """What deleting one version does to the aliases."""

    remove: list = field(default_factory=list)  # alias names to delete (they route to it, --force)
    write: list = field(default_factory=list)  # AliasRecords to rewrite (0% entry dropped, history pruned)
    notes: list = field(default_factory=list)


def delete_version(state: State, version: str, force: bool) -> VersionDelete:
    """Aliases that route traffic to the version block it unless force (then they go); a 0%
    entry is dropped from the split; history entries naming it are pruned."""
    v = state.version(version)
    if v is None:
        raise NotFoundError(f"Version {version} of '{state.function}' does not exist; see "
                            f"'mlfn versions {state.function}'.")
    if v.kept_because:
        raise TargetError(f"{version} of {state.function} cannot be deleted: {v.kept_because}.")
    taking = sorted(n for n, a in state.aliases.items() if a.weights.get(version, 0) > 0)
    for name in taking:
        if state.aliases[name].kept_because:
            raise TargetError(f"{version} of {state.function} still takes {state.aliases[name].weights[version]}% "
                              f"of the {name} alias, which {state.aliases[name].kept_because}.")
    if taking and not force:
        raise TargetError(f"Version {version} of '{state.function}' is routed by alias(es) {', '.join(taking)}; "
                          f"move them first (mlfn promote/traffic) or pass --force to delete those aliases too.")
    plan = VersionDelete(remove=taking)
    for name, a in sorted(state.aliases.items()):
        if name in taking:
            continue
        weights = {k: w for k, w in a.weights.items() if k != version}
        history = [h for h in a.history if version not in h]
        if weights == a.weights and history == a.history:
            continue
        if len(history) < len(a.history):
            plan.notes.append(f"Alias '{name}': dropped {len(a.history) - len(history)} rollback history "
                              f"entr{'y' if len(a.history) - len(history) == 1 else 'ies'} naming {version}.")
        if weights != a.weights:
            plan.notes.append(f"Alias '{name}': removed the 0% entry for {version} ({format_weights(weights)}).")
        plan.write.append(AliasRecord(name, weights, history, web=a.web, rollouts=list(a.rollouts)))
    return plan
