"""Bounds on what a request may send and how slowly: header size (431), body size
(413) and the time the body may take to arrive (408).

A pure ASGI middleware. A request that declares a ``Content-Length`` over the limit
is refused before any of it is read; otherwise the body is counted (and timed) as the
application reads it, so a streamed (chunked) body is refused as soon as it passes
the limit, and a body that trickles in is refused once ``body_timeout_s`` has passed
since the application began to read it. The application reads it only after the
caller is authenticated (gateway/guarded.py): an unauthenticated upload is answered
401 without being read. The header and idle timeouts are the HTTP server's
(gateway/http_server.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes", {"Connection": "close"})


class BodyTooSlow(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408, f"request body not received within {timeout_s:g} s", {"Connection": "close"}
        )


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        body_timeout_s: float = 30.0,
        larger_bodies: dict[str, int] | None = None,
    ) -> None:
        """``larger_bodies``: a path whose bodies may be larger (a batch), and how large."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.larger_bodies = larger_bodies or {}
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            await _refuse(send, 431, f"request headers exceed {self.max_header_bytes} bytes")
            return
        limit = self.larger_bodies.get(scope["path"], self.max_body_bytes)
        declared = dict(headers).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, f"request body exceeds {limit} bytes")
            return
        chunked = b"chunked" in dict(headers).get(b"transfer-encoding", b"").lower()
        if declared in (None, b"0") and not chunked:
            await self.app(scope, receive, send)  # no body: receive only waits for a disconnect
            return
        await self.app(scope, self._bounded(receive, limit), send)

    def _bounded(self, receive: Receive, limit: int) -> Receive:
        """``receive``, counting the body's bytes and timing its arrival."""
        received = 0
        deadline: float | None = None

        async def bounded() -> Message:
            nonlocal received, deadline
            if deadline is None:
                deadline = time.monotonic() + self.body_timeout_s
            left = deadline - time.monotonic()
            if left <= 0:
                raise BodyTooSlow(self.body_timeout_s)
            try:
                message: Message = await _within(receive(), left)
            except TimeoutError:
                raise BodyTooSlow(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                if not message.get("more_body", False):
                    deadline = float("inf")  # read in full: later calls wait for the disconnect
            return message

        return bounded


async def _within(awaitable: Any, seconds: float) -> Any:
    if seconds == float("inf"):
        return await awaitable
    async with asyncio.timeout(seconds):
        return await awaitable


async def _refuse(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"detail": reason}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
