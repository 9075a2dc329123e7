"""Fixtures for the OpenWhisk target and the local controller.

- `swagger`: validate a document against a definition of apiv1swagger.json.
- `action_image`: a tiny stdlib action runtime on the base image (`base_image`; fast), with
  the alias router (`mlfn_runtime.router`) where function images have it.
- `local_api`: the local controller in-process on an ephemeral port, state in a tmp dir;
  it runs actions as containers of `action_image`.
- `rest_api`: the same controller with no Docker at all, for tests of the REST API only
  (entities, versions, aliases); invoking an action there fails.
- `proxy` / `rest_proxy`: a recording, fault-injecting HTTP proxy in front of either.
- `lifecycle` / `rest_lifecycle`: mlfn.lifecycle.Lifecycle over an OpenWhisk target through the
  proxy (no real sleeping between retries); `.target` is the OpenWhiskTarget.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


HERE = Path(__file__).parent
ACTION_IMAGE = "mlfnow-test-action:1"


class Swagger:
    def __init__(self, path: Path):
        self.doc = json.loads(path.read_text())

    def validate(self, instance, definition: str) -> None:
        import jsonschema

        schema = {"$ref": f"#/definitions/{definition}", "definitions": self.doc["definitions"]}
        jsonschema.Draft4Validator(schema).validate(instance)


@pytest.fixture(scope="session")
def swagger(specs_dir) -> Swagger:
    return Swagger(specs_dir / "openwhisk" / "apiv1swagger.json")


@pytest.fixture(scope="session")
def action_image(base_image, tmp_path_factory):
    """Like a function image, it holds mlfn_runtime.router (weighted aliases conduct with it)."""
    from tests.targets.openwhisk.action.build import build_action_image

    return build_action_image(base_image, ACTION_IMAGE)


def _serve(home, docker_client=None):
    from mlfn.targets.local.api import make_server

    server, controller = make_server(home, port=0, idle_seconds=120, docker_client=docker_client)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.home = home
    server.controller = controller
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


@pytest.fixture(scope="session")
def local_api(tmp_path_factory, action_image):
    from mlfn.targets.local.api import close

    server = _serve(tmp_path_factory.mktemp("mlfn-local"))
    yield server
    close(server, server.controller)


class NoDocker:
    """Stands in for the Docker client where only the REST API is tested: nothing runs."""

    class containers:  # noqa: N801 - the attribute name of docker.DockerClient
        @staticmethod
        def list(**kw):
            return []

        @staticmethod
        def run(*a, **kw):
            raise RuntimeError("this test's controller has no Docker; it tests the REST API only")


@pytest.fixture(scope="session")
def rest_api(tmp_path_factory):
    from mlfn.targets.local.api import close

    server = _serve(tmp_path_factory.mktemp("mlfn-rest"), docker_client=NoDocker())
    yield server
    close(server, server.controller)


class FaultProxy:
    """Forwards to the local API, records every request, and injects faults on demand:
    `fail(method, path_regex, status, times, after=False)` answers `status` instead of (or,
    with after=True, after) forwarding; status "timeout" stalls past the client timeout."""

    def __init__(self, upstream: str):
        import requests

        self.upstream = upstream
        self.session = requests.Session()
        self.requests: list = []
        self.faults: list = []
        self.lock = threading.Lock()
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                proxy.handle(self, body)

            do_GET = do_PUT = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, method: str, path: str, status, times: int = 1, after: bool = False) -> None:
        with self.lock:
            self.faults.append({"method": method, "path": re.compile(path), "status": status, "left": times,
                                "after": after})

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()

    def _fault(self, method: str, path: str):
        with self.lock:
            for f in self.faults:
                if f["left"] > 0 and f["method"] == method and f["path"].search(path):
                    f["left"] -= 1
                    return f
        return None

    def handle(self, h, body: bytes) -> None:
        path = h.path
        with self.lock:
            self.requests.append({"method": h.command, "path": path, "body": json.loads(body) if body else None})
        fault = self._fault(h.command, path)
        if fault and fault["status"] == "timeout":
            time.sleep(1.5)
            return self._reply(h, 504, b'{"error": "gateway timeout"}')
        if fault and not fault["after"]:
            return self._reply(h, fault["status"], json.dumps({"error": "injected", "code": "x"}).encode())
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("authorization", "content-type")}
        r = self.session.request(h.command, self.upstream + path, data=body, headers=headers, timeout=120)
        if fault:
            return self._reply(h, fault["status"], json.dumps({"error": "injected after", "code": "x"}).encode())
        self._reply(h, r.status_code, r.content, {k: v for k, v in r.headers.items()
                                                   if k.lower().startswith("x-openwhisk")})

    @staticmethod
    def _reply(h, status: int, data: bytes, headers=None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(local_api):
    p = FaultProxy(local_api.url)
    yield p
    p.close()


@pytest.fixture
def rest_proxy(rest_api):
    p = FaultProxy(rest_api.url)
    yield p
    p.close()


_names = itertools.count(1)


@pytest.fixture
def fn_name(request):
    """A fresh function name per test (tests share one controller)."""
    return f"t{next(_names)}-{re.sub(r'[^a-z0-9]', '', request.node.name.lower())[:30]}"


def make_lifecycle(url: str, dry_run: bool = False, **client_options):
    """A Lifecycle over an OpenWhisk target for the API at url (a Recorder when dry_run)."""
    from mlfn.lifecycle import Lifecycle
    from mlfn.targets.openwhisk.target import openwhisk_target
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH, WskProps
    from mlfn.targets.recording import Recorder

    recorder = Recorder() if dry_run else None
    target = openwhisk_target(props=WskProps(apihost=url, auth=GUEST_AUTH, namespace="guest"), recorder=recorder,
                              sleep=lambda s: None, **client_options)
    return Lifecycle(target, recorder)


@pytest.fixture
def lifecycle(proxy):
    return make_lifecycle(proxy.url)


@pytest.fixture
def rest_lifecycle(rest_proxy):
    return make_lifecycle(rest_proxy.url)


def spec(function: str, content: str, image: str = ACTION_IMAGE, **kw):
    from mlfn.targets.interface import VersionSpec

    return VersionSpec(function=function, image=image, digest="sha256:" + content * 8, model_sha256="m" + content,
                       quantization="int8", pipeline_hash="p", content_hash=content, **kw)
