"""The alias policy (mlfn.aliases): pure functions from a State to the alias records to write."""
from __future__ import annotations

import pytest

from mlfn import aliases as policy
from mlfn.errors import NotFoundError, TargetError
from mlfn.targets.interface import Alias, State, Version


def state(versions=("v1", "v2"), aliases=None, known=True) -> State:
    vs = [Version(name=v, number=int(v[1:]), image="img", digest="") for v in versions]
    return State(function="fn", exists=True, versions=vs, aliases=dict(aliases or {}), known=known)


def alias(name, weights, history=(), **kw) -> Alias:
    return Alias(name=name, weights=dict(weights), history=[dict(h) for h in history], **kw)


def test_first_version_takes_the_default_alias_only_once():
    assert policy.first_version(state(["v1"]), "v1").weights == {"v1": 100}
    assert policy.first_version(state(["v1"]), "v1").name == "default"
    assert policy.first_version(state(aliases={"default": alias("default", {"v1": 100})}), "v2") is None


def test_assign_pushes_what_it_replaces_and_bounds_the_history():
    st = state(aliases={"default": alias("default", {"v1": 100}, history=[{"v2": 100}])})
    record = policy.assign(st, "default", {"v1": 90, "v2": 10})
    assert record.weights == {"v1": 90, "v2": 10}
    assert record.history == [{"v2": 100}, {"v1": 100}]
    same = policy.assign(st, "default", {"v1": 100})  # no change: nothing pushed
    assert same.history == [{"v2": 100}]
    long = state(aliases={"a": alias("a", {"v1": 100}, history=[{"v2": 100}] * policy.HISTORY_LIMIT)})
    assert len(policy.assign(long, "a", {"v2": 100}).history) == policy.HISTORY_LIMIT


def test_assign_refuses_missing_versions_unless_the_state_is_unknown():
    with pytest.raises(NotFoundError, match=r"v7 of 'fn' does not exist; existing versions: v1, v2\."):
        policy.assign(state(), "default", {"v1": 50, "v7": 50})
    assert policy.assign(state([], known=False), "x", {"v7": 100}).weights == {"v7": 100}


def test_assign_keeps_the_web_export_unless_told():
    st = state(aliases={"w": alias("w", {"v1": 100}, web=True)})
    assert policy.assign(st, "w", {"v2": 100}).web is True
    assert policy.assign(st, "w", {"v2": 100}, web=False).web is False
    assert policy.assign(st, "new", {"v2": 100}).web is False


def test_alias_key_names_the_default_alias_by_the_function_too():
    assert policy.alias_key("fn", None) == policy.alias_key("fn", "fn") == policy.alias_key("fn", "default")
    assert policy.alias_key("fn", "canary") == "canary"


def test_rollback_pops_the_last_assignment_and_says_what_it_replaced():
    st = state(aliases={"default": alias("default", {"v2": 100}, history=[{"v1": 100}, {"v1": 50, "v2": 50}])})
    plan = policy.rollback(st, "default")
    assert plan.record.weights == {"v1": 50, "v2": 50}
    assert plan.record.history == [{"v1": 100}]
    assert plan.replaced == {"v2": 100} and plan.notes == []


def test_rollback_skips_entries_naming_deleted_versions_and_says_so():
    st = state(["v1", "v2"], aliases={"default": alias("default", {"v2": 100},
                                                       history=[{"v1": 100}, {"v1": 50, "v3": 50}])})
    plan = policy.rollback(st, "default")
    assert plan.record.weights == {"v1": 100} and plan.record.history == []
    assert plan.notes == ["Skipped the earlier assignment v1=50 v3=50 of alias 'default': v3 was deleted."]


def test_rollback_without_history_or_alias_is_a_clear_error():
    with pytest.raises(TargetError, match="no earlier assignment"):
        policy.rollback(state(aliases={"a": alias("a", {"v1": 100})}), "a")
    with pytest.raises(NotFoundError, match="Alias 'b' of 'fn' does not exist"):
        policy.rollback(state(), "b")
    only_deleted = state(["v1"], aliases={"a": alias("a", {"v1": 100}, history=[{"v9": 100}])})
    with pytest.raises(TargetError, match=r"no earlier assignment to roll back to \(1 named deleted versions\)"):
        policy.rollback(only_deleted, "a")


def test_delete_version_blocks_on_routed_aliases_unless_forced():
    st = state(["v1", "v2"], aliases={"default": alias("default", {"v1": 100}),
                                      "canary": alias("canary", {"v1": 90, "v2": 10})})
    with pytest.raises(TargetError, match=r"routed by alias\(es\) canary; .* --force"):
        policy.delete_version(st, "v2", force=False)
    plan = policy.delete_version(st, "v2", force=True)
    assert plan.remove == ["canary"] and plan.write == []
    with pytest.raises(NotFoundError, match="Version v5 of 'fn' does not exist"):
        policy.delete_version(st, "v5", force=True)


def test_delete_version_drops_a_zero_entry_and_prunes_history():
    st = state(["v1", "v2", "v3"], aliases={
        "default": alias("default", {"v1": 100, "v3": 0}, history=[{"v3": 100}, {"v1": 50, "v2": 50}]),
        "stable": alias("stable", {"v1": 100}, history=[{"v2": 100}])})
    plan = policy.delete_version(st, "v3", force=False)
    assert plan.remove == []
    (record,) = plan.write
    assert record.name == "default" and record.weights == {"v1": 100}
    assert record.history == [{"v1": 50, "v2": 50}]
    assert any("removed the 0% entry for v3" in n for n in plan.notes)
    assert any("dropped 1 rollback history entry naming v3" in n for n in plan.notes)


def test_delete_version_respects_what_the_platform_keeps():
    kept = state(["v1", "v2"], aliases={"default": alias("default", {"v1": 100}, kept_because="it must route")})
    with pytest.raises(TargetError, match="v1 of fn still takes 100% of the default alias, which it must route"):
        policy.delete_version(kept, "v1", force=True)
    kept.versions[1].kept_because = "it is the template"
    with pytest.raises(TargetError, match="v2 of fn cannot be deleted: it is the template"):
        policy.delete_version(kept, "v2", force=True)


def test_split_for_keeps_the_rest_on_current_versions():
    assert policy.split_for("v3", 10, {"v1": 100}) == {"v1": 90, "v3": 10}
    assert policy.split_for("v3", 10, {"v1": 50, "v2": 50}) == {"v1": 45, "v2": 45, "v3": 10}
    assert sum(policy.split_for("v4", 7, {"v1": 33, "v2": 33, "v3": 34}).values()) == 100
