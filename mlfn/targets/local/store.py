"""Entities (packages, actions) and activation records of the local controller.

Kept in memory and persisted under the state folder (default `~/.mlfn/local/`) so a
restarted `mlfn local up` serves the same functions: `entities.json` is rewritten
atomically on every change; activations are appended to `activations.jsonl` (the newest
`MAX_ACTIVATIONS` are reloaded on start).
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

MAX_ACTIVATIONS = 5000


class Store:
    def __init__(self, root: Optional[Path]):
        self.root = Path(root) if root else None
        self.lock = threading.RLock()
        self.packages: dict = {}  # name -> Package dict
        self.actions: dict = {}  # "name" or "pkg/name" -> Action dict
        self.triggers: dict = {}  # name -> Trigger dict (mlfn.targets.local.triggers)
        self.rules: dict = {}  # name -> Rule dict
        self.activations: "OrderedDict[str, dict]" = OrderedDict()
        if self.root:
            self.root.mkdir(parents=True, exist_ok=True)
            self._load()

    # ---- persistence ---------------------------------------------------------------------------

    def _load(self) -> None:
        ent = self.root / "entities.json"
        if ent.exists():
            data = json.loads(ent.read_text() or "{}")
            self.packages = data.get("packages", {})
            self.actions = data.get("actions", {})
            self.triggers = data.get("triggers", {})
            self.rules = data.get("rules", {})
        acts = self.root / "activations.jsonl"
        if acts.exists():
            lines = acts.read_text().splitlines()[-MAX_ACTIVATIONS:]
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                self.activations[rec["activationId"]] = rec
            acts.write_text("".join(json.dumps(r) + "\n" for r in self.activations.values()))

    def _save_entities(self) -> None:
        if not self.root:
            return
        tmp = self.root / "entities.json.tmp"
        tmp.write_text(json.dumps({"packages": self.packages, "actions": self.actions,
                                   "triggers": self.triggers, "rules": self.rules}))
        os.replace(tmp, self.root / "entities.json")

    # ---- entities ------------------------------------------------------------------------------

    def put_package(self, name: str, pkg: dict) -> None:
        with self.lock:
            self.packages[name] = pkg
            self._save_entities()

    def delete_package(self, name: str) -> Optional[dict]:
        with self.lock:
            pkg = self.packages.pop(name, None)
            for key in [k for k in self.actions if k.startswith(name + "/")]:
                del self.actions[key]
            self._save_entities()
            return pkg

    def package_actions(self, name: str) -> list:
        with self.lock:
            return [a for k, a in self.actions.items() if k.startswith(name + "/")]

    def put_action(self, key: str, action: dict) -> None:
        with self.lock:
            self.actions[key] = action
            self._save_entities()

    def delete_action(self, key: str) -> Optional[dict]:
        with self.lock:
            a = self.actions.pop(key, None)
            self._save_entities()
            return a

    def _kind(self, kind: str) -> dict:
        return {"triggers": self.triggers, "rules": self.rules}[kind]

    def put_entity(self, kind: str, name: str, entity: dict) -> None:
        """kind: "triggers" or "rules"."""
        with self.lock:
            self._kind(kind)[name] = entity
            self._save_entities()

    def delete_entity(self, kind: str, name: str) -> Optional[dict]:
        with self.lock:
            entity = self._kind(kind).pop(name, None)
            self._save_entities()
            return entity

    # ---- activations ---------------------------------------------------------------------------

    def add_activation(self, rec: dict) -> None:
        with self.lock:
            self.activations[rec["activationId"]] = rec
            while len(self.activations) > MAX_ACTIVATIONS:
                self.activations.popitem(last=False)
            if self.root:
                with open(self.root / "activations.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")

    def list_activations(self) -> list:
        with self.lock:
            return list(reversed(self.activations.values()))
