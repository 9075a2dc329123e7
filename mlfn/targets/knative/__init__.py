"""Knative Serving: Kubernetes API client (client.py), versions/aliases <-> Service codec
(codec.py), the rendered Service (manifest.py), its checks (validate.py), the target
(target.py). Importing this package stays light: the kubernetes client loads on first use."""
from __future__ import annotations

from typing import Optional

from mlfn.targets.recording import Recorder


def knative_target(cfg=None, *, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                   namespace: Optional[str] = None, host: Optional[str] = None,
                   recorder: Optional[Recorder] = None, **client_options):
    """A Knative target from flags and mlfn.yaml (deploy.knative). With a recorder it is a dry
    run: reads go to the cluster, writes to the recorder."""
    from mlfn.config import Config
    from mlfn.targets.knative.client import DryRunKubeClient, KubeClient
    from mlfn.targets.knative.target import KnativeTarget

    cfg = cfg if cfg is not None else Config()
    kn = cfg.deploy.knative
    client_options.setdefault("wait_timeout", getattr(kn, "wait_timeout", 300))
    client = KubeClient(kubeconfig=kubeconfig, context=context or kn.context, namespace=namespace or kn.namespace,
                        **client_options)
    if recorder is not None:
        client = DryRunKubeClient(client, recorder)
    return KnativeTarget(cfg, client, host=host, namespace=namespace)
