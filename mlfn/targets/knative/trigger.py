"""Knative Eventing Triggers for a function: `mlfn deploy --trigger broker=B,type=T,...`
applies an `eventing.knative.dev/v1` Trigger whose subscriber is the function's Service
(the default alias) or one alias's tag address; `mlfn render` writes it beside the
Service; `mlfn delete` removes it. Every Trigger is validated against the Trigger CRD
(validate.validate_trigger) before it is sent or written.

A Trigger carries the labels `mlfn.dev/function` and `mlfn.dev/alias`; its name is given
(`name=`) or FUNCTION-ALIAS-<hash of broker and filters>, so deploying the same trigger
again updates it in place."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from mlfn.targets.events import EventWiring, TriggerRecord, TriggerSpec
from mlfn.targets.interface import DEFAULT_ALIAS, Progress, quiet
from mlfn.targets.knative.manifest import LABEL_FUNCTION, LABEL_MANAGED, PREFIX
from mlfn.targets.knative.validate import validate_trigger

LABEL_ALIAS = PREFIX + "alias"


def trigger_name(function: str, alias: str, spec: TriggerSpec) -> str:
    if spec.name:
        return spec.name
    digest = hashlib.sha256(json.dumps([spec.broker, spec.filters], sort_keys=True).encode()).hexdigest()[:8]
    return f"{function}-{alias}-{digest}"[-63:].lstrip("-")


def subscriber(function: str, alias: str, namespace: Optional[str]) -> dict:
    """The default alias is the Service itself; a named alias is its tag's cluster address."""
    if alias == DEFAULT_ALIAS or alias == function:
        ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": function}
        return {"ref": {**ref, "namespace": namespace} if namespace else ref}
    where = f"{namespace}.svc.cluster.local" if namespace else "svc.cluster.local"
    return {"uri": f"http://{alias}-{function}.{where}"}


def render_trigger(function: str, alias: str, spec: TriggerSpec, namespace: Optional[str]) -> dict:
    metadata = {"name": trigger_name(function, alias, spec),
                "labels": {LABEL_MANAGED: "mlfn", LABEL_FUNCTION: function, LABEL_ALIAS: alias}}
    if namespace:
        metadata["namespace"] = namespace
    body = {"broker": spec.broker}
    if spec.filters:
        body["filter"] = {"attributes": dict(spec.filters)}
    body["subscriber"] = subscriber(function, alias, namespace)
    if spec.delivery:
        delivery = {k: v for k, v in spec.delivery.items() if k != "deadLetterSink"}
        if spec.delivery.get("deadLetterSink"):
            delivery["deadLetterSink"] = {"uri": spec.delivery["deadLetterSink"]}
        body["delivery"] = delivery
    return validate_trigger({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                             "metadata": metadata, "spec": body})


def record_of(manifest: dict) -> TriggerRecord:
    spec = manifest.get("spec") or {}
    labels = manifest["metadata"].get("labels") or {}
    detail = {"broker": spec.get("broker"), "filters": (spec.get("filter") or {}).get("attributes") or {},
              "subscriber": spec.get("subscriber"), "delivery": spec.get("delivery") or {}}
    return TriggerRecord(manifest["metadata"]["name"], labels.get(LABEL_ALIAS, ""), "knative", detail)


class KnativeTriggers(EventWiring):
    """`client`: a KubeClient or its dry-run wrapper; `render_namespace` goes into rendered files."""

    def __init__(self, client, render_namespace: Optional[str] = None):
        self.client = client
        self.render_namespace = render_namespace

    def apply(self, function: str, alias: str, spec: TriggerSpec, progress: Progress = quiet) -> TriggerRecord:
        from mlfn.errors import TargetError

        if not spec.broker:
            raise TargetError("A Knative trigger needs a broker: --trigger broker=default,type=... "
                              "(a bare name is for OpenWhisk).")
        manifest = render_trigger(function, alias, spec, self.client.namespace)
        progress(f"Trigger {manifest['metadata']['name']}: broker {spec.broker} -> {function} ({alias})")
        return record_of(self.client.apply_trigger(manifest))

    def _triggers(self, function: str) -> list:
        from mlfn.errors import NotFoundError

        try:
            return self.client.list_triggers(function)
        except NotFoundError:  # no Knative Eventing on this cluster: no triggers
            return []

    def list(self, function: str) -> list:
        return [record_of(t) for t in self._triggers(function)]

    def delete(self, function: str, progress: Progress = quiet) -> list:
        names = [t["metadata"]["name"] for t in self._triggers(function)]
        for name in names:
            progress(f"Deleting trigger {name}")
            self.client.delete_trigger(name)
        return names

    def render(self, function: str, alias: str, spec: TriggerSpec, out_dir: str) -> list:
        import yaml

        manifest = render_trigger(function, alias, spec, self.render_namespace)
        path = Path(out_dir) / f"{function}.trigger.{manifest['metadata']['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return [str(path)]
