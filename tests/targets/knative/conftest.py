"""Fixtures for the Knative target: a fake Kubernetes API server (fake_apiserver.py),
a kubeconfig pointing at it, and a factory of fresh Lifecycles over new KnativeTarget objects
(each one is a "fresh machine": it holds no state of its own)."""
import pytest

from mlfn.config import Config
from mlfn.targets.interface import VersionSpec

from .fake_apiserver import FakeApiServer

NS = "mlfn-test"


@pytest.fixture
def api():
    server = FakeApiServer(revision_delay=0.05)
    yield server
    server.close()


@pytest.fixture
def kubeconfig(api, tmp_path):
    return api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)


@pytest.fixture
def cfg():
    return Config(name="digits")


@pytest.fixture
def make_lifecycle(kubeconfig, cfg):
    """make_lifecycle(dry_run=False, cfg=..., **knative_target options) -> Lifecycle (.target is the KnativeTarget)."""
    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.knative.target import knative_target
    from mlfn.targets.recording import Recorder

    def make(dry_run: bool = False, **kw):
        opts = dict(kubeconfig=kubeconfig, wait_timeout=10, poll_interval=0.02, error_window=0.1)
        opts.update(kw)
        recorder = Recorder() if dry_run else None
        target = knative_target(opts.pop("cfg", cfg), recorder=recorder, **opts)
        return Lifecycle(target, recorder)

    return make


def version_spec(n: int = 1, **kw) -> VersionSpec:
    """A distinct version per n (different digest and content hash)."""
    digest = "sha256:" + f"{n:x}".rjust(64, "a")
    base = dict(
        function="digits",
        image=f"registry.example.com/mlfn/digits@{digest}",
        digest=digest,
        model_sha256=f"{n:x}".rjust(64, "b"),
        quantization="int8",
        pipeline_hash=f"{n:x}".rjust(16, "c"),
        content_hash=f"{n:x}".rjust(64, "d"),
        env={"MLFN_LOG_LEVEL": "info"},
        labels={"mlfn-version": "0.1.0"},
    )
    base.update(kw)
    return VersionSpec(**base)
