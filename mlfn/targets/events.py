"""Event wiring: what `mlfn deploy --trigger/--feed` asks a platform to create, and the
one interface the platforms implement for it (docs/architecture.md, "Events").

    --trigger NAME                                 OpenWhisk / local: trigger NAME + a rule to the alias
    --feed /whisk.system/messaging/messageHubFeed  OpenWhisk / local: the trigger is a feed trigger
    --feed-param k=v                               a parameter of the feed action (repeatable)
    --trigger broker=default,type=T[,source=S,...][,retry=N,backoffPolicy=exponential,
              backoffDelay=PT1S,deadLetterSink=URL][,name=N]
                                                   Knative: an eventing.knative.dev/v1 Trigger whose
                                                   subscriber is the alias (the Service, or its tag URL)

A platform's `EventWiring` creates (or updates) a trigger for one alias, lists the
triggers of a function and deletes them; it needs nothing but its arguments and the
client it was built with."""
from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Optional

from mlfn.errors import ConfigError
from mlfn.targets.interface import Progress, quiet

DELIVERY_KEYS = ("retry", "backoffPolicy", "backoffDelay", "deadLetterSink")
NAME_RE = re.compile(r"\A[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?\Z", re.I)


@dataclass(frozen=True)
class TriggerSpec:
    name: str = ""  # OpenWhisk trigger name; Knative Trigger name (default: FUNCTION-ALIAS-BROKER)
    broker: str = ""  # Knative broker
    filters: dict = field(default_factory=dict)  # Knative: CloudEvent attributes to match exactly
    delivery: dict = field(default_factory=dict)  # Knative: retry, backoffPolicy, backoffDelay, deadLetterSink
    feed: Optional[str] = None  # OpenWhisk feed action, e.g. /whisk.system/messaging/messageHubFeed
    feed_params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerRecord:
    """One trigger of a function as the platform has it."""

    name: str
    alias: str
    kind: str  # "rule" (OpenWhisk, local) or "knative"
    detail: dict = field(default_factory=dict)  # rule status and feed; or broker, filters, delivery, subscriber

    def to_dict(self) -> dict:
        return {"name": self.name, "alias": self.alias, "kind": self.kind, **self.detail}


def parse_trigger(text: str, feed: Optional[str] = None, feed_params: tuple = ()) -> TriggerSpec:
    """`--trigger` text (and `--feed`, `--feed-param k=v`) -> TriggerSpec; a ConfigError
    naming the option when it is malformed."""
    params = _pairs(feed_params, "--feed-param")
    if feed is not None and not feed.startswith("/"):
        raise ConfigError(f"--feed {feed!r} must name the feed action in full, e.g. /whisk.system/messaging/messageHubFeed.")
    if "=" not in text:
        if not NAME_RE.match(text or ""):
            raise ConfigError(f"--trigger {text!r} is not a trigger name (letters, digits, '-', '.') "
                              "or a list broker=B,type=T,... for Knative.")
        return TriggerSpec(name=text, feed=feed, feed_params=params)
    pairs = _pairs(tuple(text.split(",")), "--trigger")
    if feed is not None or params:
        raise ConfigError("--feed and --feed-param go with an OpenWhisk trigger name (--trigger NAME), "
                          "not with a Knative broker trigger.")
    broker = pairs.pop("broker", "")
    if not broker:
        raise ConfigError(f"--trigger {text!r} names no broker; write broker=default,type=...")
    name = pairs.pop("name", "")
    if name and not NAME_RE.match(name):
        raise ConfigError(f"--trigger name={name!r} is not a valid Kubernetes name.")
    delivery = {k: pairs.pop(k) for k in DELIVERY_KEYS if k in pairs}
    if "retry" in delivery:
        if not delivery["retry"].isdigit():
            raise ConfigError(f"--trigger retry={delivery['retry']!r} must be a whole number of retries.")
        delivery["retry"] = int(delivery["retry"])
    if delivery.get("backoffPolicy", "exponential") not in ("exponential", "linear"):
        raise ConfigError(f"--trigger backoffPolicy={delivery['backoffPolicy']!r}: use exponential or linear.")
    if "backoffDelay" in delivery and not re.fullmatch(r"P(T(\d+(\.\d+)?[HMS])+|\d+D)", delivery["backoffDelay"]):
        raise ConfigError(f"--trigger backoffDelay={delivery['backoffDelay']!r} must be an ISO 8601 duration, e.g. PT0.5S.")
    return TriggerSpec(name=name, broker=broker, filters=pairs, delivery=delivery)


def _pairs(items: tuple, option: str) -> dict:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(f"{option} {item!r} must be KEY=VALUE.")
        if key.strip() in out:
            raise ConfigError(f"{option} sets {key.strip()!r} twice.")
        out[key.strip()] = value.strip()
    return out


class EventWiring(abc.ABC):
    """Triggers of one platform."""

    @abc.abstractmethod
    def apply(self, function: str, alias: str, spec: TriggerSpec, progress: Progress = quiet) -> TriggerRecord:
        """Create or update the trigger that sends events to `alias` of `function`."""

    @abc.abstractmethod
    def list(self, function: str) -> list:
        """[TriggerRecord] of `function` (empty when it has none)."""

    @abc.abstractmethod
    def delete(self, function: str, progress: Progress = quiet) -> list:
        """Remove every trigger of `function`; the names removed."""

    def render(self, function: str, alias: str, spec: TriggerSpec, out_dir: str) -> list:
        """Manifests a platform's own tools apply (paths written); none by default."""
        return []

