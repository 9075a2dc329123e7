"""Fixtures for the event tests: the runtime's tiny models and in-process server
(tests/runtime/conftest.py), and a sink that collects CloudEvents."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.runtime.conftest import _restore_environ, digits, rt_models  # noqa: F401 (fixtures)


class Sink:
    """An HTTP server that records every POSTed event: (headers as a dict, body)."""

    def __init__(self, host: str = "127.0.0.1"):
        events = self.events = []
        lock = self.lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one_request(self):
                super().handle_one_request()
                self.close_connection = True

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    events.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")  # so that kill() leaves no open connection
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def received(self) -> list:
        with self.lock:
            return list(self.events)

    def kill(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.kill()


# the OpenWhisk target's fixtures: the local controller (with and without Docker), the
# swagger validator, the tiny action image, fresh function names
from tests.targets.conftest import _no_openwhisk_action_env  # noqa: F401,E402
from tests.targets.openwhisk.conftest import (action_image, fn_name, local_api, rest_api,  # noqa: F401,E402
                                              swagger)
from tests.targets.knative.conftest import api, cfg, kubeconfig, make_lifecycle  # noqa: F401,E402
