"""The HTTP server's protocol: uvicorn's over h11, with its own timeouts, its own
answer to a malformed request, and no body framed two ways.

uvicorn closes a connection idle between requests after its keep-alive timeout, but
waits for ever for a request's headers: a client that connects and sends nothing, or
a byte at a time, holds a connection (and a file descriptor) as long as it likes.
Here every request has ``header_timeout_s`` to send its headers in full: the first
from the moment the connection opens, each later one from the first byte that comes
while no request is in flight (the last read to its end and answered). A head
(request line and headers) is bounded by h11 at ``max_head_bytes``.

uvicorn answers a request it cannot parse with a 400 whose end is the connection's
close, and closes at once: with the rest of the request (its body) still arriving or
unread, the close is a reset, and the client loses the end of the 400 with it
("connection reset by peer" instead of the error). This protocol sends the 400 with its
length, half-closes, and reads and discards what is still coming for up to
``linger_s`` before it closes.

A request answered before its body was read (a 404, a 405: uvicorn does not close
the connection) has ``body_timeout_s`` from its answer for the rest of its body to
arrive, as a body the app reads has (gateway/limits.py); each byte put off uvicorn's
keep-alive timeout, so a body trickled in held the connection for as long as it came.

h11 frames a body that has both ``Content-Length`` and ``Transfer-Encoding`` by its
chunks and keeps the connection open, so what follows the last chunk is read as a
second request: behind a proxy that frames by the length, a request smuggled past it.
Such a request is refused here with the 400 above (RFC 9112, 6.3: reject it, or close
after it).

Why h11 and not the C parser (httptools): it was a fifth less CPU a submit, but llhttp
and uvicorn's protocol around it bound neither a request's head nor its trailers, run
the body of an ``Upgrade`` request as a request of its own, and keep a connection fed
blank lines open; h11 refuses each (BENCHMARKS.md, 2026-12-05)."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_LINE_BYTES = 16 * 1024


class _OneFraming(h11.Connection):
    """h11's connection, refusing a request whose body's end two headers give."""

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.RemoteProtocolError("Content-Length with Transfer-Encoding")
        return event


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_head_bytes = 8192 + REQUEST_LINE_BYTES
    linger_s = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _OneFraming(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)
        self._header_timer: asyncio.TimerHandle | None = None
        self._unread_timer: asyncio.TimerHandle | None = None  # a body answered early
        self._lingering: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_head()

    def _time_head(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _time_next_head(self) -> None:
        """Time what comes while no request is in flight as a head, unless timed."""
        if self._header_timer is None and self._between_requests():
            self._time_head()

    def _between_requests(self) -> bool:
        """No request in flight: the last one read to its end and answered, so what
        comes next is a head (a body still arriving after an early answer is not)."""
        answered = self.cycle is None or self.cycle.response_complete
        return answered and self.conn.their_state is h11.IDLE

    def _unsupported_upgrade_warning(self) -> None:
        """The gateway upgrades to nothing: an ``Upgrade`` request is answered as a
        plain one. Not logged: two warnings a request, any client's to send."""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            # Answered before its body was read (a 404, a 405): the rest has
            # ``body_timeout_s`` to arrive, as a body the app reads has.
            self._unread_timer = self.loop.call_later(self.body_timeout_s, self._too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self._unread_timer is not None and self.conn.their_state is not h11.SEND_BODY:
            self._unread_timer.cancel()  # the body answered early has arrived in full
            self._unread_timer = None
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._header_timer.cancel()  # a request's headers arrived in full
            self._header_timer = None
        elif self.conn.trailing_data[0]:
            # The next head began in the read that ended a body answered early.
            self._time_next_head()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._unread_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._unread_timer = None
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # the rest of a refused request, dropped
        self._time_next_head()  # a later request begins (or bytes that begin none)
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # This request's answer has begun or gone (a 405 before its trailers
            # overflowed): no 400 can follow it, and h11 would raise on one.
            self.transport.close()
            return
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
        self._header_timer = self._unread_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(
    *, header_timeout_s: float, body_timeout_s: float, max_header_bytes: int
) -> type[GuardedH11Protocol]:
    """The protocol class with its bounds set (uvicorn takes a class). A head may be
    ``max_header_bytes`` (the app's own bound on the headers, 431 past it) and a
    request line of up to ``REQUEST_LINE_BYTES``; past both, h11 refuses it (400)."""
    bounds = {
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
        "max_head_bytes": max_header_bytes + REQUEST_LINE_BYTES,
    }
    return type("GuardedH11Protocol", (GuardedH11Protocol,), bounds)
