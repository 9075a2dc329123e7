"""`--target local`: the OpenWhisk target pointed at the embedded controller."""
from __future__ import annotations

import os
from typing import Optional

from mlfn.errors import TargetError
from mlfn.targets.local import daemon
from mlfn.targets.openwhisk.target import openwhisk_target
from mlfn.targets.openwhisk.target import OpenWhiskTarget
from mlfn.targets.local.home import local_key
from mlfn.targets.openwhisk.wskprops import GUEST_NAMESPACE, WskProps
from mlfn.targets.recording import Recorder


def down_hint(base: str) -> Optional[str]:
    """The local controller is ours to start: say how, instead of 'cannot reach'."""
    if daemon.ping(base, timeout=1.0):
        return None
    st = daemon.current_status()
    if st.running and st.apihost != base:
        return (f"Nothing answers on {base}; the local OpenWhisk API runs on {st.apihost} "
                f"(pass --port {st.apihost.rsplit(':', 1)[1]}).")
    return f"The local OpenWhisk API at {base} is not running; start it with 'mlfn local up'."


def local_target(cfg=None, *, port: Optional[int] = None, recorder: Optional[Recorder] = None,
                 **client_options) -> OpenWhiskTarget:
    """The OpenWhisk target for the controller of this state folder (`mlfn local up`)."""
    if port is None and not os.environ.get("MLFN_LOCAL_APIHOST") and recorder is None:
        # Without --port the controller is the one of this state folder (MLFN_LOCAL_HOME): when it
        # is not running, say so rather than talk to whatever else listens on the default port.
        pid = (daemon.read_runfile() or {}).get("pid")
        if not pid or not daemon.pid_alive(pid):
            raise TargetError(f"The local OpenWhisk API of {daemon.state_dir()} is not running; start it with "
                              "'mlfn local up' (or pass --port N for one that runs elsewhere).")
    props = WskProps(apihost=daemon.local_apihost(port), auth=local_key().auth, namespace=GUEST_NAMESPACE,
                     source="mlfn local")
    client_options.setdefault("attempts", 3)  # a stopped local controller fails fast with a hint
    return openwhisk_target(cfg, props=props, recorder=recorder, name="local", down_hint=down_hint,
                            **client_options)
