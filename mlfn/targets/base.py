"""The one interface every deployment target implements (kn's KnServingClient style).

Commands (deploy, versions, status, traffic, promote, rollback, delete, invoke) are
written once against `Target`; `local`, `openwhisk` and `knative` are peers behind it.
State lives on the platform, never on the machine that runs mlfn.

Vocabulary (../shared/DESIGN.md, "Versions and aliases"):
- a Version is immutable: image digest + model sha256 + pipeline config, numbered v1, v2...
- an Alias maps to one version, or to several with integer weights summing to 100. The
  default alias has the function's own name.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

DEFAULT_ALIAS = "default"


@dataclass
class VersionSpec:
    """What `deploy` asks a target to publish."""

    function: str  # function name (OpenWhisk package, Knative service)
    image: str  # image reference the platform pulls, by digest where a registry is used
    digest: str  # "sha256:..." (registry digest, or image id for the local daemon)
    model_sha256: str
    quantization: str
    pipeline_hash: str
    content_hash: str  # identity of the version: equal hashes = same content = no new version
    memory: int = 256
    timeout: int = 60000
    concurrency: int = 1
    logs: int = 10
    env: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)  # extra metadata (mlfn version, source, ...)


@dataclass
class Version:
    name: str  # "v3"
    number: int
    image: str
    digest: str
    model_sha256: str = ""
    quantization: str = ""
    pipeline_hash: str = ""
    content_hash: str = ""
    created: str = ""  # ISO 8601 UTC
    url: Optional[str] = None


@dataclass
class Alias:
    name: str
    weights: dict  # {"v3": 90, "v4": 10}
    previous: Optional[dict] = None  # the assignment before the last change (for rollback)
    url: Optional[str] = None
    web_url: Optional[str] = None


@dataclass
class Status:
    function: str
    target: str
    versions: list  # list[Version]
    aliases: list  # list[Alias]
    url: Optional[str] = None


@dataclass
class DeployResult:
    function: str
    version: Version
    created: bool  # False when identical content already existed
    aliases: list = field(default_factory=list)


@dataclass
class InvokeResult:
    result: Any
    version: Optional[str]  # which version served it
    activation_id: Optional[str] = None
    duration_ms: Optional[float] = None
    status_code: Optional[int] = None


class Target(abc.ABC):
    """A platform that runs function versions behind aliases."""

    name: str = "target"

    @abc.abstractmethod
    def publish(self, spec: VersionSpec, progress: Callable[[str], None] = lambda m: None) -> DeployResult:
        """Create the next version vN for spec (or return the existing one with equal content_hash)."""

    @abc.abstractmethod
    def versions(self, function: str) -> list:
        """All versions of a function, oldest first. NotFoundError if the function does not exist."""

    @abc.abstractmethod
    def status(self, function: str) -> Status:
        """Versions and aliases, read back from the platform."""

    @abc.abstractmethod
    def set_traffic(self, function: str, alias: str, weights: dict, web: bool = False) -> Alias:
        """Point alias at weights ({"v3": 90, "v4": 10}); remembers the old assignment for rollback.
        Validated first (mlfn.traffic.validate_weights); every named version must exist."""

    @abc.abstractmethod
    def rollback(self, function: str, alias: str) -> Alias:
        """Return alias to its previous assignment; TargetError if there is none."""

    @abc.abstractmethod
    def delete(self, function: str, version: Optional[str] = None, force: bool = False) -> list:
        """Delete one version (refused while an alias routes to it unless force) or the whole
        function. Returns what was deleted."""

    @abc.abstractmethod
    def invoke(self, function: str, payload: Any, alias: Optional[str] = None,
               version: Optional[str] = None, timeout: Optional[float] = None) -> InvokeResult:
        """Call the function through an alias (default alias when both are None) or a version;
        wait at most `timeout` seconds (None: the target's default)."""

    def promote(self, function: str, version: str, alias: str = DEFAULT_ALIAS) -> Alias:
        """Blue/green: move alias to 100% version in one update."""
        return self.set_traffic(function, alias, {version: 100})

    def render(self, spec: VersionSpec, out_dir: str) -> list:
        """Write the platform's own manifests for GitOps users; returns the files written."""
        raise NotImplementedError(f"render is not supported by the {self.name} target")
