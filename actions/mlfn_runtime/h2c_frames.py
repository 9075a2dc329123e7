"""The `h2` package (sans-IO HTTP/2) as `h2c` uses it: a server connection, its first
SETTINGS, GOAWAY, events by kind. Importing this module fails when the image has no `h2`
(serving.grpc off); `h2c` then closes HTTP/2 connections."""
from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes

ProtocolError = h2.exceptions.ProtocolError
StreamGone = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)
DEFAULT_WINDOW = 65535
_KINDS = ((h2.events.RequestReceived, "request"), (h2.events.DataReceived, "data"),
          (h2.events.StreamEnded, "ended"), (h2.events.StreamReset, "reset"),
          (h2.events.ConnectionTerminated, "terminated"))


def new_server_connection(window: int, max_streams: int) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=False, initial_values={
        SettingCodes.INITIAL_WINDOW_SIZE: window, SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE})
    return conn


def start(conn, window: int) -> None:
    """The server preface (SETTINGS) and a connection receive window of `window` bytes."""
    conn.initiate_connection()
    conn.increment_flow_control_window(window - DEFAULT_WINDOW)


def goaway(conn) -> None:
    """GOAWAY (no error): the client opens no new streams; the ones taken still finish."""
    conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR)


def fail(conn, error: h2.exceptions.ProtocolError) -> None:
    """GOAWAY for a connection that broke the protocol."""
    try:
        conn.close_connection(error_code=error.error_code)
    except ProtocolError:
        pass


def refuse_rest(conn, stream_id: int) -> None:
    """RST_STREAM(NO_ERROR) after a complete response: the client stops sending its body."""
    try:
        conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.NO_ERROR)
    except StreamGone:
        pass


def classify(event) -> str:
    for cls, kind in _KINDS:
        if isinstance(event, cls):
            return kind
    return "other"
