"""Reading one request body within a route's limit: Content-Length or chunked, gzip or
deflate decompressed as it streams in, so no more than `limit` bytes are ever held
decompressed (a 64 KB gzip bomb costs at most `limit`, not its 60 MB) and a body that
ends early is refused rather than handed on truncated.

The caller closes the connection after any error raised here (the rest of the body is
unread); TimeoutError comes from the connection's body deadline (`connections`)."""
from __future__ import annotations

import zlib

from mlfn_runtime.errors import InvalidInput, PayloadTooLarge

PIECE = 64 * 1024  # bytes read from the socket at a time
GZIP_SLACK = 64 * 1024  # a compressed body may be a little larger than what it holds


def read_body(rfile, headers, limit: int, limit_name: str = "serving.max_payload_bytes") -> bytes:
    """The body of a request whose headers are `headers`, at most `limit` bytes after
    decompression (PayloadTooLarge naming `limit_name` beyond; InvalidInput when malformed
    or cut short)."""
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "deflate"):
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    sink = _Sink(limit, limit_name, encoding if encoding in ("gzip", "deflate") else None)
    raw_limit = limit if sink.decompressor is None else limit + GZIP_SLACK
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        _read_chunked(rfile, raw_limit, sink)
    else:
        _read_exact(rfile, _content_length(headers, raw_limit, limit_name), sink)
    return sink.finish()


def _content_length(headers, limit: int, limit_name: str) -> int:
    length = (headers.get("Content-Length") or "").strip()
    if not length:
        return 0
    if not length.isdigit():
        raise InvalidInput("Content-Length is not a non-negative number")
    n = int(length)
    if n > limit:
        raise PayloadTooLarge(f"the request body is {n} bytes; this route takes at most {limit} ({limit_name})")
    return n


def _read_exact(rfile, n: int, sink: "_Sink") -> None:
    left = n
    while left:
        piece = rfile.read(min(left, PIECE))
        if not piece:
            raise InvalidInput(f"the request body ended after {n - left} of its {n} bytes (Content-Length)")
        sink.feed(piece)
        left -= len(piece)


def _read_chunked(rfile, limit: int, sink: "_Sink") -> None:
    total = 0
    while True:
        line = rfile.readline(65537)
        try:
            field = line.split(b";")[0].strip()
            if not field or field.startswith((b"-", b"+")):  # int() takes a sign
                raise ValueError(field)
            size = int(field, 16)
        except ValueError:
            raise InvalidInput("malformed chunked request body") from None
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return
        total += size
        if total > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes ({sink.limit_name})")
        _read_exact(rfile, size, sink)
        rfile.readline(3)


class _Sink:
    """Collects the body, decompressing as it arrives, never beyond `limit` bytes."""

    def __init__(self, limit: int, limit_name: str, encoding):
        self.limit, self.limit_name = limit, limit_name
        self.encoding = encoding
        self.decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15) if encoding else None
        self.out = bytearray()
        self.received = 0

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.decompressor is None:
            self._add(data)
            return
        while data:
            try:  # max_length >= 1 here (len(out) <= limit), so output stays bounded
                self._add(self.decompressor.decompress(data, self.limit + 1 - len(self.out)))
            except zlib.error as e:
                raise InvalidInput(f"the {self.encoding} request body cannot be decompressed: {e}") from None
            data = self.decompressor.unconsumed_tail

    def _add(self, data: bytes) -> None:
        self.out += data
        if len(self.out) > self.limit:
            what = "decompressed " if self.decompressor else ""
            raise PayloadTooLarge(f"the request body is more than {self.limit} bytes {what}({self.limit_name})")

    def finish(self) -> bytes:
        if self.decompressor is not None and self.received and not self.decompressor.eof:
            raise InvalidInput(f"the {self.encoding} request body is truncated")
        return bytes(self.out)
