"""Payload logging: each sampled request and its response go to `logging.sink` as two
CloudEvents in binary mode (KServe's logger types `org.kubeflow.serving.inference.request`
and `.response`), with one id and the extensions `mlfnfunction`, `mlfnversion`,
`mlfnendpoint`.

Sending never blocks or fails a request: `record` puts the pair on a bounded queue (a
full queue drops it) and one sender thread posts the events once the requests in flight
are answered (or after IDLE_WAIT under constant load), retrying with backoff on
connection errors and 5xx/429; an event still not delivered is dropped. Drops and
deliveries are counted in the metrics (`mlfn_payload_events_dropped_total`,
`mlfn_payload_events_sent_total`). With `logging.payload: metadata` an image request is
sent as its content type, size and image shape only; the response always in full."""
from __future__ import annotations

import base64
import http.client
import io
import queue
import threading
import time
from typing import Optional
from urllib.parse import urlsplit

from mlfn_runtime.event_settings import LoggingSettings, function_version
from mlfn_runtime.http_messages import encode_json

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
LOGGED_ENDPOINTS = frozenset({"predict", "events", "run", "v2_infer", "v1_predict"})
QUEUE_SIZE = 1000
ATTEMPTS = 4
BACKOFF = 0.05  # seconds before the 2nd attempt; doubles each time
TIMEOUT = 5.0
IDLE_WAIT = 0.005  # seconds the sender waits for the requests in flight to finish


class PayloadLog:
    """The sender of one server; `record` is all a request path calls."""

    def __init__(self, settings: LoggingSettings, metrics, function_name: str):
        self.settings = settings
        self.metrics = metrics
        self.function_name = function_name
        self._queue: "queue.Queue" = queue.Queue(QUEUE_SIZE)
        self._sender: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.sink) and self.settings.sample_rate > 0

    def record(self, endpoint: str, req, resp) -> None:
        """Queue the request/response pair of one served request (sampled; never blocks)."""
        if not self.enabled or endpoint not in LOGGED_ENDPOINTS:
            return
        if self.settings.sample_rate < 1.0:
            import random  # only a sampled payload log needs it (not imported at start-up)

            if random.random() >= self.settings.sample_rate:
                return
        self._ensure_sender()
        try:
            self._queue.put_nowait((endpoint, req, resp))
        except queue.Full:
            self.metrics.count_payload_events(dropped=2)

    def _ensure_sender(self) -> None:
        if self._sender is None:
            with self._start_lock:
                if self._sender is None:
                    self._sender = threading.Thread(target=self._run, name="mlfn-payload-log", daemon=True)
                    self._sender.start()

    def _run(self) -> None:
        conn = _Connection(self.settings.sink)
        while True:
            batch = [self._queue.get()]
            self._wait_idle()
            while True:  # everything queued meanwhile goes out in the same round
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for endpoint, req, resp in batch:
                for headers, body in self._events(request_id(req), endpoint, req, resp):
                    sent = conn.post(headers, body)
                    self.metrics.count_payload_events(sent=int(sent), dropped=int(not sent))

    def _wait_idle(self) -> None:
        """Let the requests in flight (the logged one is still writing its answer) finish
        first, for at most IDLE_WAIT: the sender then does not take the CPU (and the GIL)
        from them. Under constant load it sends every IDLE_WAIT, all that queued up."""
        deadline = time.monotonic() + IDLE_WAIT
        while self.metrics.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.0005)

    def _events(self, request_id: str, endpoint: str, req, resp) -> list:
        import datetime  # in the sender thread: not on the start-up path

        common = {
            "ce-specversion": "1.0", "ce-id": request_id, "ce-source": f"/mlfn/{self.function_name}",
            "ce-time": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
            "ce-mlfnfunction": self.function_name, "ce-mlfnversion": function_version(),
            "ce-mlfnendpoint": endpoint,
        }
        req_type, req_body = self._request_data(req)
        resp_body = resp.body if isinstance(resp.body, (bytes, bytearray)) else encode_json(resp.body)
        resp_type = resp.headers.get("Content-Type") or (
            "application/octet-stream" if isinstance(resp.body, (bytes, bytearray)) else "application/json")
        return [
            ({**common, "ce-type": REQUEST_TYPE, "Content-Type": req_type}, req_body),
            ({**common, "ce-type": RESPONSE_TYPE, "Content-Type": resp_type}, bytes(resp_body)),
        ]

    def _request_data(self, req) -> tuple:
        ctype = req.headers.get("Content-Type") or "application/json"
        if self.settings.payload != "metadata":
            return ctype, req.body
        return "application/json", encode_json(request_metadata(req.content_type, req.body))


def request_id(req) -> str:
    """The id both events carry: the request event's id (binary `ce-id`, or `id` of a
    structured event), else `X-Request-Id`, else a new one."""
    if req.headers.get("ce-id"):
        return req.headers["ce-id"]
    if req.content_type == "application/cloudevents+json":
        try:
            import json

            event_id = json.loads(req.body.decode("utf-8")).get("id")
            if isinstance(event_id, str) and event_id:
                return event_id
        except (UnicodeDecodeError, ValueError, AttributeError):
            pass
    if req.headers.get("X-Request-Id"):
        return req.headers["X-Request-Id"]
    import uuid  # 2-3 ms to import: only when an id must be made up

    return str(uuid.uuid4())


def request_metadata(content_type: str, body: bytes) -> dict:
    """What `logging.payload: metadata` sends for a request: type and size, and for each
    image its format, size and shape (read from the image header only)."""
    out = {"content_type": content_type, "bytes": len(body)}
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        out["images"] = [_image_shape(body)]
        return out
    try:
        import json

        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return out
    if isinstance(doc, dict):
        images = ([doc["image"]] if "image" in doc else doc.get("images")) or []
        if isinstance(images, list) and images:
            out["images"] = [_image_shape(_b64(v)) for v in images]
        else:
            out["fields"] = sorted(str(k) for k in doc)
    return out


def _b64(v) -> bytes:
    if isinstance(v, dict):
        v = v.get("b64", "")
    try:
        text = str(v).split(",", 1)[1] if str(v).startswith("data:") else str(v)
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None)
    except (ValueError, TypeError):
        return b""


def _image_shape(data: bytes) -> dict:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode, "bytes": len(data)}
    except Exception:  # not an image (or no Pillow): the size is all there is to say
        return {"bytes": len(data)}


class _Connection:
    """One keep-alive connection to the sink, reopened after errors."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.netloc = parts.netloc
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn = None

    def post(self, headers: dict, body: bytes) -> bool:
        """True when the sink took the event (2xx), after up to ATTEMPTS tries."""
        delay = BACKOFF
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                conn = self._open()
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status < 300:
                    return True
                if resp.status < 500 and resp.status != 429:
                    return False  # the sink refuses this event; retrying will not help
            except (OSError, http.client.HTTPException):
                pass
            self._close()
        return False

    def _open(self):
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.netloc, timeout=TIMEOUT)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
