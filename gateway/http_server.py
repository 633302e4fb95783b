"""The HTTP server's own timeouts. uvicorn closes a connection idle between requests
after its keep-alive timeout, but waits for ever for the first request's headers: a
client that connects and sends nothing, or a byte at a time, holds a connection (and
a file descriptor) as long as it likes. This protocol gives every connection
``header_timeout_s`` to send its first request's headers in full."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

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
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.scope is None and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[GuardedH11Protocol]:
    """The protocol class, with its header timeout set (uvicorn takes a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": seconds})
