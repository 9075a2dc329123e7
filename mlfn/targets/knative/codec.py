"""Versions and aliases <-> a Knative Service and its Revisions (docs/architecture.md,
"Knative").

One mlfn version is one Knative revision with a bring-your-own name `<service>-v<N>`
(created from `spec.template`), so versions are immutable and numbered on the platform;
its metadata are revision annotations `mlfn.dev/*` (one field table, VERSION_FIELDS).

Aliases <-> `spec.traffic`:

- The **default alias** (the function's own name, `default`) is the Service's own URL:
  the *untagged* traffic entries, `{revisionName: <svc>-vN, percent: P}`, whose percents
  sum to 100 as the webhook demands. It is the only alias that can split traffic, and the
  Service cannot be without it.
- A **named alias** (`stable`, `canary`, ...) is a *tagged* entry with `percent: 0`,
  `{revisionName: <svc>-vN, tag: <alias>, percent: 0}`: its own URL reaches exactly that
  version. Knative routes a tag to exactly one revision, so a named alias names one version.
- Every ready **version** also gets a tag `vN` with `percent: 0` (its own URL). Alias names
  that look like versions (`v3`) are therefore refused.

The aliases' rollback histories are one JSON object in the Service annotation
`mlfn.dev/traffic-history`: `{"default": [{"v1": 100}, ...], "stable": [...]}`, oldest
first. (The list of changes older mlfn versions wrote there is read too.) The highest
version number ever used is kept in `mlfn.dev/last-version`, so a number is never reused.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from mlfn.errors import TargetError
from mlfn.targets.annotations import FieldTable
from mlfn.targets.interface import DEFAULT_ALIAS, Alias, Version

PREFIX = "mlfn.dev/"
ANN_HISTORY = PREFIX + "traffic-history"
ANN_LAST = PREFIX + "last-version"
ANN_ROLLOUTS = PREFIX + "rollouts"  # {"default": [rollout state, ...]} (mlfn.rollout.state), oldest first
DEFAULT_ALIASES = ("default", "")
DEFAULT_KEPT = "the Service always routes its default traffic somewhere; move that traffic first (mlfn traffic)"
VERSION_FIELDS = FieldTable(PREFIX, (
    ("content_hash", "content-hash"), ("model_sha256", "model-sha256"), ("quantization", "quantization"),
    ("pipeline_hash", "pipeline-hash"), ("digest", "image-digest"), ("created", "created")), strings=True)

_VERSION_TAG = re.compile(r"^v[1-9][0-9]*$")


def revision_name(service: str, number: int) -> str:
    return f"{service}-v{number}"


def version_of(service: str, revision: str) -> Optional[str]:
    """`digits-v3` -> `v3` for mlfn's own revisions of service, else None."""
    prefix = f"{service}-"
    if revision and revision.startswith(prefix) and _VERSION_TAG.match(revision[len(prefix):]):
        return revision[len(prefix):]
    return None


def is_default_alias(service: str, alias: Optional[str]) -> bool:
    return alias is None or alias in DEFAULT_ALIASES or alias == service


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")



# --------------------------------------------------------------------------- routing


@dataclass
class Routing:
    """`spec.traffic` as mlfn reads it: keys are revision names."""

    default: dict = field(default_factory=dict)  # revision -> percent (untagged entries)
    aliases: dict = field(default_factory=dict)  # alias -> revision (tagged, percent 0)
    version_tags: dict = field(default_factory=dict)  # "v3" -> revision
    foreign: list = field(default_factory=list)  # entries mlfn did not write, kept as they are

    @classmethod
    def from_traffic(cls, service: str, traffic: Optional[list]) -> "Routing":
        r = cls()
        for entry in traffic or []:
            rev = entry.get("revisionName")
            tag = entry.get("tag")
            pct = int(entry.get("percent") or 0)
            if not rev or entry.get("latestRevision"):
                r.foreign.append(dict(entry))
                continue
            if tag is None:
                r.default[rev] = r.default.get(rev, 0) + pct
            elif _VERSION_TAG.match(tag) and version_of(service, rev) == tag and pct == 0:
                r.version_tags[tag] = rev
            elif pct == 0:
                r.aliases[tag] = rev
            else:  # a tagged entry that also carries default traffic (e.g. written by kn)
                r.default[rev] = r.default.get(rev, 0) + pct
                r.aliases[tag] = rev
        return r

    def to_traffic(self) -> list:
        out = [{"revisionName": rev, "percent": pct} for rev, pct in self.default.items() if pct > 0]
        out += [{"revisionName": rev, "tag": alias, "percent": 0} for alias, rev in sorted(self.aliases.items())]
        out += [
            {"revisionName": rev, "tag": tag, "percent": 0}
            for tag, rev in sorted(self.version_tags.items(), key=lambda kv: int(kv[0][1:]))
        ]
        return out + [dict(e) for e in self.foreign]

    def weights(self, service: str, alias: Optional[str]) -> Optional[dict]:
        """The alias as mlfn weights ({"v2": 90, "v3": 10}); None if it does not exist."""
        if is_default_alias(service, alias):
            if not self.default:
                return None
            return {_vname(service, rev): pct for rev, pct in self.default.items() if pct > 0}
        rev = self.aliases.get(alias)
        return None if rev is None else {_vname(service, rev): 100}

    def routed(self, revision: str) -> list:
        """Which aliases route to revision (default counts only with a percent > 0)."""
        out = ["default"] if self.default.get(revision, 0) > 0 else []
        return out + sorted(a for a, rev in self.aliases.items() if rev == revision)

    def assign(self, service: str, alias: Optional[str], weights: Optional[dict]) -> None:
        """Point alias at weights (None removes a named alias)."""
        if is_default_alias(service, alias):
            if not weights:
                raise TargetError(f"The default alias of {service} always routes somewhere; give it a version.")
            self.default = {revision_name(service, _num(v)): w for v, w in weights.items() if w > 0}
            # entries written by others (e.g. `latestRevision: true` from kn) that carried default
            # traffic are replaced by the new split; their 0% tags stay
            self.foreign = [e for e in self.foreign if not int(e.get("percent") or 0)]
            return
        if weights is None:
            self.aliases.pop(alias, None)
            return
        live = {v: w for v, w in weights.items() if w > 0}
        if len(live) != 1:
            raise TargetError(
                f"Knative routes a tag to exactly one revision, so alias '{alias}' can point to one version only "
                f"(got {', '.join(f'{k}={v}' for k, v in weights.items())}); split the default alias instead "
                f"(mlfn traffic {service} v2=90 v3=10) or point '{alias}' at one version."
            )
        self.aliases[alias] = revision_name(service, _num(next(iter(live))))


def _num(version: str) -> int:
    from mlfn.traffic import version_number  # noqa: PLC0415

    return version_number(version)


def _vname(service: str, revision: str) -> str:
    return version_of(service, revision) or revision


def check_alias_name(alias: str) -> None:
    if _VERSION_TAG.match(alias):
        raise TargetError(
            f"Alias name '{alias}' looks like a version; versions have their own tags on Knative, pick another name."
        )
    if not re.match(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", alias):
        raise TargetError(
            f"Alias name '{alias}' is not a valid Knative tag; use lower-case letters, digits and '-', "
            "starting with a letter."
        )



# --------------------------------------------------------------------------- history


def read_histories(service_obj: Optional[dict]) -> dict:
    """{alias: [earlier weights, oldest first]} from the Service annotation."""
    ann = ((service_obj or {}).get("metadata") or {}).get("annotations") or {}
    raw = ann.get(ANN_HISTORY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        name = ((service_obj or {}).get("metadata") or {}).get("name")
        raise TargetError(f"Annotation {ANN_HISTORY} on Knative service {name} is not valid JSON; "
                          "fix or remove it.") from None
    if isinstance(data, list):  # the change log older mlfn versions wrote: [{"alias", "from", "to"}]
        out: dict = {}
        for entry in data:
            if isinstance(entry, dict) and entry.get("from"):
                out.setdefault(entry.get("alias") or DEFAULT_ALIAS, []).append(entry["from"])
        return out
    return {k: [dict(h) for h in v] for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


def write_histories(service_obj: dict, histories: dict) -> None:
    kept = {k: v for k, v in sorted(histories.items()) if v}
    service_obj["metadata"].setdefault("annotations", {})[ANN_HISTORY] = json.dumps(kept, separators=(",", ":"))


def read_rollouts(service_obj: Optional[dict]) -> dict:
    """{alias: [rollout states, oldest first]} from the Service annotation mlfn.dev/rollouts."""
    meta = (service_obj or {}).get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(ANN_ROLLOUTS)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        raise TargetError(f"Annotation {ANN_ROLLOUTS} on Knative service {meta.get('name')} is not valid JSON; "
                          "fix or remove it.") from None
    if not isinstance(data, dict):
        return {}
    return {k: [dict(r) for r in v if isinstance(r, dict)] for k, v in data.items() if isinstance(v, list)}


def write_rollouts(service_obj: dict, rollouts: dict) -> None:
    kept = {k: v for k, v in sorted(rollouts.items()) if v}
    annotations = service_obj["metadata"].setdefault("annotations", {})
    if kept:
        annotations[ANN_ROLLOUTS] = json.dumps(kept, separators=(",", ":"))
    else:
        annotations.pop(ANN_ROLLOUTS, None)


# --------------------------------------------------------------------------- records


def tag_urls(obj: dict) -> dict:
    return {t["tag"]: t.get("url") for t in ((obj.get("status") or {}).get("traffic") or []) if t.get("tag")}


def condition(obj: dict, kind: str) -> Optional[dict]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return None


def describe(cond: Optional[dict]) -> str:
    if not cond:
        return "no status reported yet"
    text = cond.get("reason") or cond.get("status") or "Unknown"
    return f"{text}: {cond['message'].rstrip('.')}" if cond.get("message") else text


def version_from(service: str, rev: dict, urls: dict, template: str = "") -> Version:
    """A Version from a Revision (or from the Service's template, for a planned one)."""
    meta = rev.get("metadata") or {}
    ann = meta.get("annotations") or {}
    name = version_of(service, meta["name"])
    containers = (rev.get("spec") or {}).get("containers") or [{}]
    fields = {"content_hash": "", "model_sha256": "", "quantization": "", "pipeline_hash": "", "digest": "",
              "created": meta.get("creationTimestamp", ""), **VERSION_FIELDS.decode(ann)}
    kept = ("it is the Service's template (Knative would recreate it); deploy a newer version first, "
            "or delete the whole function") if meta["name"] == template else ""
    return Version(name=name, number=int(name[1:]), image=containers[0].get("image", ""), url=urls.get(name),
                   kept_because=kept, **fields)


def aliases_from(service: str, obj: dict) -> dict:
    routing = Routing.from_traffic(service, (obj.get("spec") or {}).get("traffic"))
    histories = read_histories(obj)
    rollouts = read_rollouts(obj)
    urls = tag_urls(obj)
    out = {}
    default = routing.weights(service, None)
    if default is not None:
        out[DEFAULT_ALIAS] = Alias(name=DEFAULT_ALIAS, weights=default, history=histories.get(DEFAULT_ALIAS, []),
                                   url=(obj.get("status") or {}).get("url"), kept_because=DEFAULT_KEPT,
                                   rollouts=rollouts.get(DEFAULT_ALIAS, []))
    for alias in sorted(routing.aliases):
        out[alias] = Alias(name=alias, weights=routing.weights(service, alias), history=histories.get(alias, []),
                           url=urls.get(alias), rollouts=rollouts.get(alias, []))
    return out
