"""What the protocol handlers share in one server: the function (None in an image for
code actions), the serving settings, the event settings and payload log, the OpenWhisk
action, metrics, readiness, and the
slots that bound the requests doing work at once (serving.workers)."""
from __future__ import annotations

import os

from mlfn_runtime.auth import Guard
from mlfn_runtime.errors import NotReady
from mlfn_runtime.event_settings import read_settings
from mlfn_runtime.in_flight import RequestsInFlight
from mlfn_runtime.metrics import Metrics
from mlfn_runtime.payload_log import PayloadLog
from mlfn_runtime.serving import INIT_TOKEN_ENV, Serving
from mlfn_runtime.slots import WorkerSlots
from mlfn_runtime.whisk_action import WhiskAction


class ServerState:
    def __init__(self, function=None):
        self.function = function
        self.serving = function.serving if function is not None else Serving.from_dict(None)
        # serving holds the init token's hash; code actions (and what they start) cannot read the token
        os.environ.pop(INIT_TOKEN_ENV, None)
        in_flight = function.in_flight if function is not None else RequestsInFlight()  # the batchers read it
        self.metrics = Metrics(in_flight, os.environ.get("K_SERVICE"), os.environ.get("K_REVISION"))
        if function is not None:
            for name, m in function.models.items():
                self.metrics.load_seconds[name] = m.runner.load_seconds
        self.action = WhiskAction(function, self.serving)
        self.event_settings, logging = read_settings(function.base_dir if function is not None else None)
        self.payload_log = PayloadLog(logging, self.metrics, function.name if function is not None else "")
        self.auth = Guard.from_function(function, self.metrics)
        self.draining = False
        # serving.workers bounds the requests doing work at once (serving.max_connections the connections)
        self.slots = WorkerSlots(self.serving.workers)

    @property
    def ready(self) -> bool:
        return self.function is not None and not self.draining

    def require_function(self):
        # while draining, requests already accepted still complete (only readiness says 503)
        if self.function is None:
            raise NotReady("this image holds no model (no function.json); initialize it with code via /init")
        return self.function
