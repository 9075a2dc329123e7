"""Triggers and rules on OpenWhisk (and the local controller): `mlfn deploy --trigger NAME`
creates trigger NAME (a feed trigger with `--feed`) and a rule from it to the alias action
`FUNCTION/ALIAS`, so a weighted alias splits events as it splits invocations.

The trigger and the rule carry the annotations `mlfn-function` and `mlfn-alias`; that is
how `status` finds a function's triggers and `delete` removes them. A feed trigger is made
as `wsk trigger create --feed` makes it: the trigger is stored with the annotation
`feed`, then the feed action is invoked with lifecycleEvent CREATE (and DELETE before the
trigger goes); a feed that refuses leaves no trigger behind."""
from __future__ import annotations

from typing import Optional

from mlfn.errors import TargetError
from mlfn.targets.events import EventWiring, TriggerRecord, TriggerSpec
from mlfn.targets.interface import Progress, quiet
from mlfn.targets.openwhisk.client import Unreadable

FUNCTION_KEY, ALIAS_KEY, FEED_KEY = "mlfn-function", "mlfn-alias", "feed"


def _annotations(entity: Optional[dict]) -> dict:
    return {kv.get("key"): kv.get("value") for kv in (entity or {}).get("annotations") or []}


def rule_name(trigger: str, function: str, alias: str) -> str:
    return f"{trigger}--{function}--{alias}"


class OpenWhiskTriggers(EventWiring):
    """`client`: an OpenWhiskClient or its dry-run wrapper."""

    def __init__(self, client):
        self.client = client

    def _get(self, *parts: str) -> tuple:
        """(entity or None, whether the platform could be read): an offline dry run reads nothing."""
        try:
            return self.client.get(*parts), True
        except Unreadable:
            return None, False

    def _fqn(self, name: str) -> str:
        return f"/{self.client.resolved_namespace()}/{name}"

    def apply(self, function: str, alias: str, spec: TriggerSpec, progress: Progress = quiet) -> TriggerRecord:
        if not spec.name:
            raise TargetError("An OpenWhisk trigger needs a name: --trigger NAME (broker=... is for Knative).")
        action, known = self._get("actions", function, alias)
        if known and action is None:
            raise TargetError(f"Function '{function}' has no alias '{alias}' to bind trigger '{spec.name}' to.")
        marks = [{"key": FUNCTION_KEY, "value": function}, {"key": ALIAS_KEY, "value": alias}]
        existing, _ = self._get("triggers", spec.name)
        if existing is None:
            self._create_trigger(spec, marks, progress)
        elif spec.feed and _annotations(existing).get(FEED_KEY) != spec.feed:
            raise TargetError(f"Trigger '{spec.name}' exists without feed {spec.feed}; delete it first or pick "
                              "another name.")
        rule = rule_name(spec.name, function, alias)
        progress(f"Rule {rule}: trigger {spec.name} -> {function}/{alias}")
        self.client.put(("rules", rule), {"trigger": self._fqn(spec.name), "action": self._fqn(f"{function}/{alias}"),
                                          "status": "active", "annotations": marks}, overwrite=True)
        return TriggerRecord(spec.name, alias, "rule", {"rule": rule, "status": "active", "feed": spec.feed})

    def _create_trigger(self, spec: TriggerSpec, marks: list, progress: Progress) -> None:
        annotations = marks + ([{"key": FEED_KEY, "value": spec.feed}] if spec.feed else [])
        progress(f"Trigger {spec.name}" + (f" (feed {spec.feed})" if spec.feed else ""))
        self.client.put(("triggers", spec.name), {"annotations": annotations, "parameters": []}, overwrite=False)
        if spec.feed:
            try:
                self.client.feed(spec.feed, "CREATE", self._fqn(spec.name), spec.feed_params)
            except TargetError:
                self.client.delete("triggers", spec.name)
                raise

    def render(self, function: str, alias: str, spec: TriggerSpec, out_dir: str) -> list:
        from mlfn.errors import ConfigError

        raise ConfigError("mlfn render writes triggers for the knative target only; on OpenWhisk, "
                          "'mlfn deploy --trigger NAME' creates the trigger and its rule.")

    def list(self, function: str) -> list:
        try:
            metas = self.client.get("rules") or []
        except Unreadable:  # a dry run with no platform to read: it knows of no triggers
            return []
        out = []
        for meta in metas:
            marks = _annotations(meta)
            if marks.get(FUNCTION_KEY) != function:
                continue
            rule = self.client.get("rules", meta["name"]) or meta
            trigger = self.client.get("triggers", rule["trigger"]["name"])
            out.append(TriggerRecord(rule["trigger"]["name"], marks.get(ALIAS_KEY, ""), "rule",
                                     {"rule": rule["name"], "status": rule.get("status", ""),
                                      "feed": _annotations(trigger).get(FEED_KEY)}))
        return sorted(out, key=lambda r: (r.name, r.alias))

    def delete(self, function: str, progress: Progress = quiet) -> list:
        records = self.list(function)
        for r in records:
            progress(f"Deleting rule {r.detail['rule']}")
            self.client.delete("rules", r.detail["rule"])
        removed = []
        for name in sorted({r.name for r in records}):
            trigger = self.client.get("triggers", name)
            marks = _annotations(trigger)
            if trigger is None or marks.get(FUNCTION_KEY) != function:
                continue  # made for another function: only the rule was this function's
            if marks.get(FEED_KEY):
                self.client.feed(marks[FEED_KEY], "DELETE", self._fqn(name), {})
            progress(f"Deleting trigger {name}")
            self.client.delete("triggers", name)
            removed.append(name)
        return removed
