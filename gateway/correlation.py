"""Every request gets a correlation id (the client's, if well formed), kept in
``request.state.correlation_id`` and echoed on the response.

Plain ASGI rather than ``@app.middleware("http")``: that wrapper passes every chunk
of a streaming response through an extra task and memory stream, which cost the
live streams most of their latency with a thousand clients."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.caller import correlation_id_of


class Correlate:
    def __init__(self, app: ASGIApp, header: str = "X-Correlation-ID") -> None:
        self.app = app
        self.header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        correlation_id = correlation_id_of(request, self.header)
        request.state.correlation_id = correlation_id

        async def send_correlated(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[self.header] = correlation_id
            await send(message)

        await self.app(scope, receive, send_correlated)
