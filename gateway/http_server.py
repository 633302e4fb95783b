"""The HTTP server's own timeouts, and its answer to a malformed request.

uvicorn closes a connection idle between requests after its keep-alive timeout, but
waits for ever for the first request's headers: a client that connects and sends
nothing, or a byte at a time, holds a connection (and a file descriptor) as long as it
likes. This protocol gives every connection ``header_timeout_s`` to send its first
request's headers in full.

uvicorn answers a request it cannot parse with a 400 whose end is the connection's
close, and closes at once: with the rest of the request (its body) still arriving or
unread, the close is a reset, and the client loses the end of the 400 with it
("connection reset by peer" instead of the error). This protocol sends the 400 with its
length, half-closes, and reads and discards what is still coming for up to
``linger_s`` before it closes."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = 10.0
    linger_s = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self.scope is not None and self._header_timer is not None:
            self._header_timer.cancel()  # a request's headers arrived in full
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is None:
            super().data_received(data)  # (lingering: the rest of a refused request, dropped)

    def send_400_response(self, msg: str) -> None:
        body = msg.encode("ascii")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the client reads the 400 to its end, then EOF
        # The client's own close ends it (eof_received: the transport closes), or this.
        self._lingering = self.loop.call_later(self.linger_s, self.transport.close)

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.scope is None and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[GuardedH11Protocol]:
    """The protocol class, with its header timeout set (uvicorn takes a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": seconds})
