"""The Knative Service mlfn renders, and how mlfn's aliases map onto Knative traffic.

One mlfn version is one Knative revision with a bring-your-own name `<service>-v<N>`
(created from `spec.template`), so versions are immutable and numbered on the platform.

Aliases <-> `spec.traffic` (the mapping `status`, `rollback` and `delete` read back):

- The **default alias** (the function's own name, `default`) is the Service's own URL:
  the *untagged* traffic entries, `{revisionName: <svc>-vN, percent: P}`, whose percents
  sum to 100 as the webhook demands. It is the only alias that can split traffic
  (blue/green and canary weights live here).
- A **named alias** (`stable`, `canary`, ...) is a *tagged* entry with `percent: 0`,
  `{revisionName: <svc>-vN, tag: <alias>, percent: 0}`: its own URL
  (`http://<alias>-<svc>.<ns>.<domain>`) reaches exactly that version and it takes no share
  of the default URL's traffic. Knative routes a tag to exactly one revision, so a named
  alias names one version; asking a named alias for a weighted split is refused with a
  message that says to split the default alias instead.
- Every ready **version** also gets a tag `vN` with `percent: 0`, so each version has its
  own URL (`mlfn invoke --version v3`, smoke tests before moving any alias). Alias names
  that look like versions (`v3`) are therefore refused.

The traffic history (for rollback from any machine) is a JSON list in the Service
annotation `mlfn.dev/traffic-history`: `[{"alias", "from", "to", "at"}, ...]`, newest last,
where `from`/`to` are `{"v2": 90, "v3": 10}` (or null when the alias did not exist).
The highest version number ever used is kept in `mlfn.dev/last-version`, so a deleted
number is never reused.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from mlfn.errors import ConfigError, TargetError

GROUP = "serving.knative.dev"
API_VERSION = "v1"
SERVICES = "services"
REVISIONS = "revisions"

PORT = 8080
HEALTH_PATH = "/v2/health/ready"

PREFIX = "mlfn.dev/"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_VERSION = PREFIX + "version"
LABEL_FUNCTION = PREFIX + "function"
ANN_CONTENT = PREFIX + "content-hash"
ANN_MODEL = PREFIX + "model-sha256"
ANN_QUANT = PREFIX + "quantization"
ANN_PIPELINE = PREFIX + "pipeline-hash"
ANN_DIGEST = PREFIX + "image-digest"
ANN_CREATED = PREFIX + "created"
ANN_HISTORY = PREFIX + "traffic-history"
ANN_LAST = PREFIX + "last-version"
LABEL_KN_SERVICE = "serving.knative.dev/service"

RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")
HISTORY_LIMIT = 50
DEFAULT_ALIASES = ("default", "")

_VERSION_TAG = re.compile(r"^v[1-9][0-9]*$")
_ANN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


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
    from mlfn.traffic import version_number

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


def read_history(service_obj: Optional[dict]) -> list:
    ann = ((service_obj or {}).get("metadata") or {}).get("annotations") or {}
    raw = ann.get(ANN_HISTORY)
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        name = ((service_obj or {}).get("metadata") or {}).get("name")
        raise TargetError(
            f"Annotation {ANN_HISTORY} on Knative service {name} is not valid JSON; fix or remove it."
        ) from None
    return data if isinstance(data, list) else []


def last_change(history: list, alias: str) -> Optional[dict]:
    for entry in reversed(history):
        if entry.get("alias") == alias:
            return entry
    return None


def record(history: list, alias: str, before: Optional[dict], after: Optional[dict]) -> list:
    entry = {"alias": alias, "from": before, "to": after, "at": now_iso()}
    return (history + [entry])[-HISTORY_LIMIT:]


# --------------------------------------------------------------------------- rendering


def _annotation_key(name: str) -> str:
    return PREFIX + (_ANN_NAME.sub("-", str(name)).strip("-._")[:63] or "x")


def container_env(env: dict, where: str = "deploy.env") -> list:
    out = []
    for name, value in (env or {}).items():
        if name in RESERVED_ENV:
            raise ConfigError(
                f"{where}.{name} is reserved by Knative (it sets {', '.join(RESERVED_ENV)} itself); "
                "rename the variable."
            )
        if not re.match(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", str(name)):
            raise ConfigError(f"{where}.{name} is not a valid environment variable name.")
        out.append((str(name), "" if value is None else str(value)))
    return out


def autoscaling_annotations(kn) -> dict:
    """`spec.template.metadata.annotations` for the autoscaler, from deploy.knative."""
    ann = {
        "autoscaling.knative.dev/class": kn.autoscaling_class,
        "autoscaling.knative.dev/metric": kn.metric,
        "autoscaling.knative.dev/min-scale": str(kn.min_scale),
    }
    if kn.max_scale:
        ann["autoscaling.knative.dev/max-scale"] = str(kn.max_scale)
    if kn.target is not None:
        ann["autoscaling.knative.dev/target"] = str(kn.target)
    return ann


def _check_limits(kn, spec, timeout: int) -> None:
    """The Knative defaults a user is most likely to cross, named by their mlfn.yaml key."""
    from mlfn.targets.knative_validate import MAX_CONTAINER_CONCURRENCY, MAX_TIMEOUT_SECONDS

    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        key = "deploy.knative.timeout_seconds" if kn.timeout_seconds is not None else "deploy.timeout (ms)"
        raise ConfigError(f"{key} gives a request timeout of {timeout} s; Knative allows 1 to "
                          f"{MAX_TIMEOUT_SECONDS} s (max-revision-timeout-seconds).")
    if not 0 <= int(spec.concurrency) <= MAX_CONTAINER_CONCURRENCY:
        raise ConfigError(f"deploy.concurrency is {spec.concurrency}; Knative allows 0 (unlimited) to "
                          f"{MAX_CONTAINER_CONCURRENCY} requests per container.")
    if int(spec.memory) <= 0:
        raise ConfigError(f"deploy.memory is {spec.memory}; give the container's memory in MB, e.g. 256.")
    if kn.min_scale < 0 or kn.max_scale < 0 or (kn.max_scale and kn.max_scale < kn.min_scale):
        raise ConfigError(f"deploy.knative.max_scale ({kn.max_scale}) must be 0 (unlimited) or at least "
                          f"deploy.knative.min_scale ({kn.min_scale}), and neither may be negative.")


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    from mlfn.targets.knative_validate import template_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("service.yaml.j2")


def render_service(cfg, spec, number: int, *, namespace: Optional[str], traffic: list,
                   service_annotations: Optional[dict] = None, created: Optional[str] = None) -> dict:
    """The Service manifest (a dict) for version `number` of spec, with the given traffic."""
    import yaml

    kn = cfg.deploy.knative
    service = spec.function
    timeout = kn.timeout_seconds if kn.timeout_seconds is not None else max(1, math.ceil(spec.timeout / 1000))
    _check_limits(kn, spec, timeout)
    memory = f"{int(spec.memory)}Mi"
    requests = {"memory": memory}
    limits = {"memory": kn.memory_limit or memory}
    if kn.cpu:
        requests["cpu"] = kn.cpu
    if kn.cpu_limit:
        limits["cpu"] = kn.cpu_limit
    revision_labels = {
        LABEL_MANAGED: "mlfn",
        LABEL_FUNCTION: service,
        LABEL_VERSION: str(number),
    }
    revision_annotations = dict(autoscaling_annotations(kn))
    for key, value in sorted((spec.labels or {}).items()):
        revision_annotations[_annotation_key(key)] = str(value)
    revision_annotations.update({
        ANN_CONTENT: spec.content_hash,
        ANN_MODEL: spec.model_sha256,
        ANN_QUANT: spec.quantization,
        ANN_PIPELINE: spec.pipeline_hash,
        ANN_DIGEST: spec.digest,
        ANN_CREATED: created or now_iso(),
    })
    ann = dict(service_annotations or {})
    ann[ANN_LAST] = str(max(number, int(ann.get(ANN_LAST) or 0)))
    text = _template().render(
        service=service,
        namespace=namespace,
        service_labels={LABEL_MANAGED: "mlfn", LABEL_FUNCTION: service},
        service_annotations=ann,
        revision=revision_name(service, number),
        revision_labels=revision_labels,
        revision_annotations=revision_annotations,
        container_concurrency=int(spec.concurrency),
        timeout_seconds=int(timeout),
        image=spec.image,
        port=PORT,
        env=container_env(spec.env),
        requests=requests,
        limits=limits,
        health_path=HEALTH_PATH,
        traffic=traffic,
    )
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def template_content(obj: Optional[dict]) -> Optional[dict]:
    """spec.template without the per-render timestamp: two renders of the same version compare equal."""
    tpl = json.loads(json.dumps(((obj or {}).get("spec") or {}).get("template") or {}))
    ((tpl.get("metadata") or {}).get("annotations") or {}).pop(ANN_CREATED, None)
    return tpl or None
