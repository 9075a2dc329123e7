"""Triggers and rules of the local controller, as OpenWhisk has them (apiv1swagger.json:
TriggerPut/Trigger, RulePut/Rule):

    PUT/GET/DELETE /namespaces/_/triggers/NAME      a trigger (parameters bound under the payload)
    POST           /namespaces/_/triggers/NAME      fire: every active rule activates its action;
                                                    202 {activationId} (204 when no rule is active)
    PUT/GET/DELETE /namespaces/_/rules/NAME         {"trigger": "/_/T", "action": "/_/pkg/a"}
    POST           /namespaces/_/rules/NAME         {"status": "active" | "inactive"}

A fired trigger gets its own activation record: its result is the payload the rules got,
its logs one JSON line per rule (`{"statusCode", "success", "activationId", "rule",
"action"}`), and each rule's activation names it as `cause`. A rule's action is resolved
when the trigger fires, so a rule to an alias follows the alias's traffic split.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from mlfn.targets.local.controller import ApiError, Controller, bump, now_ms

ACTIVE, INACTIVE = "active", "inactive"


class Triggers:
    def __init__(self, controller: Controller):
        self.controller = controller
        self.store = controller.store
        self.namespace = controller.namespace

    # ---- triggers ------------------------------------------------------------------------------

    def put_trigger(self, name: str, body: Any, overwrite: bool) -> dict:
        Controller.check_name(name, "trigger")
        if not isinstance(body, dict):
            raise ApiError(400, "The request content was malformed: a JSON object is expected.")
        with self.store.lock:
            old = self.store.triggers.get(name)
            if old and not overwrite:
                raise ApiError(409, "resource already exists")
            trigger = {
                "namespace": self.namespace, "name": name,
                "version": bump(old["version"]) if old else "0.0.1",
                "publish": bool(body.get("publish", (old or {}).get("publish", False))),
                "annotations": body.get("annotations", (old or {}).get("annotations", [])) or [],
                "parameters": body.get("parameters", (old or {}).get("parameters", [])) or [],
                "limits": {}, "updated": now_ms(),
            }
            self.store.put_entity("triggers", name, trigger)
        return self._with_rules(trigger)

    def get_trigger(self, name: str) -> dict:
        return self._with_rules(self._trigger(name))

    def list_triggers(self, limit: int, skip: int) -> list:
        items = sorted(self.store.triggers.values(), key=lambda t: -t.get("updated", 0))
        return [{k: t[k] for k in ("namespace", "name", "version", "publish", "annotations", "updated")}
                for t in items[skip: skip + (limit or 30)]]

    def delete_trigger(self, name: str) -> dict:
        trigger = self.get_trigger(name)
        self.store.delete_entity("triggers", name)
        return trigger

    def _trigger(self, name: str) -> dict:
        trigger = self.store.triggers.get(name)
        if trigger is None:
            raise ApiError(404, "The requested resource does not exist.")
        return trigger

    def _with_rules(self, trigger: dict) -> dict:
        rules = {f"{self.namespace}/{r['name']}": {"action": r["action"], "status": r["status"]}
                 for r in self.store.rules.values() if r["trigger"]["name"] == trigger["name"]}
        return {**trigger, "rules": rules}

    def fire(self, name: str, payload: Any) -> Optional[str]:
        """Activate every active rule of trigger `name`: the trigger's activation id, or None
        when no rule is active (OpenWhisk answers 204 then and records nothing)."""
        trigger = self._trigger(name)
        if payload is not None and not isinstance(payload, dict):
            raise ApiError(400, "The request content was malformed: a JSON object is expected.")
        args = {kv["key"]: kv["value"] for kv in trigger.get("parameters") or []}
        args.update(payload or {})
        rules = [r for r in self.store.rules.values() if r["trigger"]["name"] == name and r["status"] == ACTIVE]
        if not rules:
            return None
        aid, start = uuid.uuid4().hex, now_ms()
        logs = [json.dumps(self._activate_rule(rule, args, aid)) for rule in sorted(rules, key=lambda r: r["name"])]
        self.store.add_activation({
            "namespace": self.namespace, "name": name, "version": trigger["version"], "publish": False,
            "subject": self.namespace, "activationId": aid, "start": start, "end": start, "duration": 0,
            "response": {"status": "success", "statusCode": 0, "success": True, "result": args,
                         "size": len(json.dumps(args))},
            "logs": logs, "annotations": [{"key": "path", "value": f"{self.namespace}/{name}"}],
        })
        return aid

    def _activate_rule(self, rule: dict, args: dict, cause: str) -> dict:
        entry = {"rule": f"{self.namespace}/{rule['name']}", "action": rule["action"]["path"] + "/" + rule["action"]["name"]}
        target = self.controller.resolve(f"/{rule['action']['path']}/{rule['action']['name']}")
        if target is None:
            return {**entry, "statusCode": 1, "success": False, "error": "The requested resource does not exist."}
        aid, _ = self.controller.start(target[0], target[1], dict(args), cause=cause)
        return {**entry, "statusCode": 0, "success": True, "activationId": aid}

    # ---- rules ---------------------------------------------------------------------------------

    def put_rule(self, name: str, body: Any, overwrite: bool) -> dict:
        Controller.check_name(name, "rule")
        if not isinstance(body, dict):
            raise ApiError(400, "The request content was malformed: a JSON object is expected.")
        with self.store.lock:
            old = self.store.rules.get(name)
            if old and not overwrite:
                raise ApiError(409, "resource already exists")
            trigger = self._path_name(body.get("trigger"), "trigger", old)
            action = self._path_name(body.get("action"), "action", old)
            if trigger["name"] not in self.store.triggers:
                raise ApiError(404, f"The trigger '{trigger['name']}' does not exist.")
            if self.controller.resolve(f"/{action['path']}/{action['name']}") is None:
                raise ApiError(404, f"The action '{action['path']}/{action['name']}' does not exist.")
            status = body.get("status") or (old or {}).get("status") or ACTIVE
            if status not in (ACTIVE, INACTIVE):
                raise ApiError(400, f"The rule status '{status}' is not one of active, inactive.")
            rule = {
                "namespace": self.namespace, "name": name,
                "version": bump(old["version"]) if old else "0.0.1",
                "publish": bool(body.get("publish", (old or {}).get("publish", False))),
                "annotations": body.get("annotations", (old or {}).get("annotations", [])) or [],
                "status": status, "trigger": trigger, "action": action, "updated": now_ms(),
            }
            self.store.put_entity("rules", name, rule)
        return rule

    def _path_name(self, value: Any, what: str, old: Optional[dict]) -> dict:
        """'/ns/pkg/name', '/ns/name', 'pkg/name' or 'name' -> {"path", "name"} (OpenWhisk's PathName)."""
        if value is None and old:
            return old[what]
        if not isinstance(value, str) or not value.strip("/"):
            raise ApiError(400, f"The rule needs a '{what}' naming an entity.")
        parts = [p for p in value.split("/") if p]
        if value.startswith("/"):
            if parts[0] not in (self.namespace, "_"):
                raise ApiError(400, f"The {what} '{value}' is not in namespace '{self.namespace}'.")
            parts = parts[1:]
        if not 1 <= len(parts) <= (2 if what == "action" else 1):
            raise ApiError(400, f"The {what} name '{value}' is not valid.")
        path = "/".join([self.namespace] + parts[:-1])
        return {"path": path, "name": parts[-1]}

    def get_rule(self, name: str) -> dict:
        rule = self.store.rules.get(name)
        if rule is None:
            raise ApiError(404, "The requested resource does not exist.")
        return rule

    def list_rules(self, limit: int, skip: int) -> list:
        items = sorted(self.store.rules.values(), key=lambda r: -r.get("updated", 0))
        return [{k: r[k] for k in ("namespace", "name", "version", "publish", "annotations", "updated",
                                   "trigger", "action")} for r in items[skip: skip + (limit or 30)]]

    def delete_rule(self, name: str) -> dict:
        rule = self.get_rule(name)
        self.store.delete_entity("rules", name)
        return rule

    def set_rule_status(self, name: str, body: Any) -> dict:
        status = body.get("status") if isinstance(body, dict) else None
        if status not in (ACTIVE, INACTIVE):
            raise ApiError(400, "The request content was malformed: 'status' must be 'active' or 'inactive'.")
        with self.store.lock:
            rule = {**self.get_rule(name), "status": status, "updated": now_ms()}
            self.store.put_entity("rules", name, rule)
        return rule

    # ---- the REST routes -----------------------------------------------------------------------

    def route(self, collection: str, method: str, rest: list, q: dict, body) -> tuple:
        """(status, JSON body or None) for /namespaces/_/{triggers,rules}[/NAME]; `body()`
        reads the request's JSON."""
        limit, skip = int(q.get("limit") or 30), int(q.get("skip") or 0)
        overwrite = q.get("overwrite", "false").lower() == "true"
        if not rest and method == "GET":
            return 200, (self.list_triggers if collection == "triggers" else self.list_rules)(limit, skip)
        if len(rest) != 1:
            raise ApiError(404, "The requested resource does not exist.")
        name = rest[0]
        if collection == "triggers":
            handlers = {"GET": lambda: self.get_trigger(name), "DELETE": lambda: self.delete_trigger(name),
                        "PUT": lambda: self.put_trigger(name, body(), overwrite)}
            if method == "POST":
                aid = self.fire(name, body())
                return (204, None) if aid is None else (202, {"activationId": aid})
        else:
            handlers = {"GET": lambda: self.get_rule(name), "DELETE": lambda: self.delete_rule(name),
                        "PUT": lambda: self.put_rule(name, body(), overwrite),
                        "POST": lambda: self.set_rule_status(name, body())}
        if method not in handlers:
            raise ApiError(405, f"Method {method} is not allowed here.")
        return 200, handlers[method]()
