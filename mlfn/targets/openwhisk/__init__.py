"""Apache OpenWhisk: REST client (client.py), entity codec (codec.py), target (target.py),
credentials as `wsk` reads them (wskprops.py)."""
from __future__ import annotations

from typing import Optional

from mlfn.targets.openwhisk.client import DryRunOpenWhiskClient, OpenWhiskClient
from mlfn.targets.openwhisk.target import OpenWhiskTarget
from mlfn.targets.openwhisk.wskprops import WskProps, load_wskprops
from mlfn.targets.recording import Recorder


def openwhisk_target(cfg=None, *, apihost: Optional[str] = None, auth: Optional[str] = None,
                     namespace: Optional[str] = None, insecure: bool = False, recorder: Optional[Recorder] = None,
                     props: Optional[WskProps] = None, name: str = "openwhisk", **client_options) -> OpenWhiskTarget:
    """An OpenWhisk target from flags, ~/.wskprops and mlfn.yaml. With a recorder it is a dry
    run: writes go there; without an API host and key it plans offline."""
    if props is None:
        ow_cfg = cfg.deploy.openwhisk if cfg is not None else None
        props = load_wskprops(apihost=apihost, auth=auth, namespace=namespace or getattr(ow_cfg, "namespace", None),
                              insecure=insecure)
    if recorder is None:
        return OpenWhiskTarget(OpenWhiskClient(props, **client_options), name=name)
    inner = OpenWhiskClient(props, **client_options) if props.apihost and props.auth else None
    return OpenWhiskTarget(DryRunOpenWhiskClient(inner, recorder, namespace=props.namespace or "_"), name=name)


__all__ = ["OpenWhiskClient", "DryRunOpenWhiskClient", "OpenWhiskTarget", "openwhisk_target", "WskProps",
           "load_wskprops"]
