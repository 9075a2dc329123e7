"""The requests in flight in one server: admitted and not yet answered (the
`mlfn_inflight_requests` gauge), and how many of them are inside a batcher.

    in_flight = RequestsInFlight()
    in_flight.start()      # a request was admitted (http_server, h2c: through Metrics.start)
    ...                    # batchers count it in `batched` while it is inside one
    in_flight.finish()     # it was answered (Metrics.observe)

Server-side batching (mlfn_runtime.batching) reads both counts under `changed`, the one
lock and condition every batcher of the function shares: a leader stops waiting for
company once every request in flight is already inside a batcher (nobody else can come),
and `finish` wakes it when a request it was waiting for is answered elsewhere.
"""
from __future__ import annotations

import threading


class RequestsInFlight:
    def __init__(self):
        self.changed = threading.Condition()  # guards admitted and batched; notified when they change
        self.admitted = 0  # requests admitted and not yet answered
        self.batched = 0  # of those, requests inside a Batcher.predict (waiting, leading or running)

    def start(self) -> None:
        with self.changed:
            self.admitted += 1

    def finish(self) -> None:
        with self.changed:
            self.admitted -= 1
            self.changed.notify_all()  # a leader may have been waiting for this one

    def nobody_else_can_come(self, max_requests: int) -> bool:
        """(Caller holds `changed`.) Every request in flight is inside a batcher, or as many
        are as there are worker slots (`max_requests`): no other request can join a group now.
        Batcher calls made outside a server (none admitted) count as alone."""
        return self.batched >= self.admitted or self.batched >= max_requests
