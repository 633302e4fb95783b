"""The HTTP server's protocol: uvicorn's over the C parser (httptools, llhttp), with
its own timeouts and its own answer to a malformed request.

uvicorn closes a connection idle between requests after its keep-alive timeout, but
waits for ever for a request's headers: a client that connects and sends nothing, or
a byte at a time, holds a connection (and a file descriptor) as long as it likes.
Here every request has ``header_timeout_s`` to send its headers in full: the first
from the moment the connection opens, each later one from its first byte.

Nor does the parser bound a request's head: a header that never ends is buffered as
it comes, tens of megabytes a second. A head (request line and headers) still
unfinished past ``max_head_bytes`` (the headers' bound and a request line's,
``REQUEST_LINE_BYTES``) is answered 431 and the connection closed. The
bytes are counted as they are fed to the parser while a head is unfinished; where a
head begins within a read that also ends the request before it, the whole read
counts, so the bound errs by at most one read, never short of a head's true size.

uvicorn answers a request it cannot parse with a 400 whose end is the connection's
close, and closes at once: with the rest of the request (its body) still arriving or
unread, the close is a reset, and the client loses the end of the 400 with it
("connection reset by peer" instead of the error). This protocol sends the 400 with its
length, half-closes, and reads and discards what is still coming for up to
``linger_s`` before it closes.

The parser is httptools rather than uvicorn's pure-Python h11: parsing a request and
writing its response took about a third of a gateway process's CPU with h11
(BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

REQUEST_LINE_BYTES = 16 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    max_head_bytes = 24 * 1024
    linger_s = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None
        self._in_head = True  # a head is unfinished: the connection's first, or a later one
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._header_timer is None:  # a later request: timed from its first byte
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._header_timer is not None:
            self._header_timer.cancel()  # the request's headers arrived in full
            self._header_timer = None
        if not _framed_once(self.headers, self.parser.get_http_version()):
            # Raised in the parser's callback: the parser stops, and uvicorn answers
            # its error with send_400_response, before the request reaches the app.
            raise ValueError("a request's host or body framed otherwise than once")
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # the rest of a refused request, dropped
        super().data_received(data)
        if not self._in_head or self._lingering is not None or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            # As the app's own 431 for headers over max_header_bytes (gateway/limits.py).
            reason = f"request line and headers exceed {self.max_head_bytes} bytes"
            self._refuse(431, json.dumps({"detail": reason}).encode(), b"application/json")

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg.encode("ascii"), b"text/plain; charset=utf-8")

    def _refuse(self, status: int, body: bytes, content_type: bytes) -> None:
        """Answer ``status`` with ``body``, then half-close and linger (above)."""
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: " + content_type + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the client reads the answer to its end, then EOF
        # The client's own close ends it (eof_received: the transport closes), or this.
        self._lingering = self.loop.call_later(self.linger_s, self.transport.close)

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _framed_once(headers: list[tuple[bytes, bytes]], http_version: str) -> bool:
    """What h11 required and llhttp lets through: an HTTP/1.1 request names one host
    (RFC 9112, 3.2), and a transfer coding, if any, is ``chunked`` alone, as this
    server decodes no other."""
    hosts = 0
    for name, value in headers:  # names are lower-cased by the protocol
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding" and value.strip().lower() != b"chunked":
            return False
    return hosts == 1 or (hosts == 0 and http_version == "1.0")


def guarded_protocol(
    *, header_timeout_s: float, max_header_bytes: int
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with its bounds set (uvicorn takes a class). A head may be
    ``max_header_bytes`` (the app's own bound on the headers, 431 past it) and a
    request line of up to ``REQUEST_LINE_BYTES``."""
    bounds = {
        "header_timeout_s": header_timeout_s,
        "max_head_bytes": max_header_bytes + REQUEST_LINE_BYTES,
    }
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), bounds)
