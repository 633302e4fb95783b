"""The correlation id of each request: the caller's when well formed, a new one
otherwise; echoed on the response, bound to the request's logs and set on its span.

A plain ASGI middleware: it never buffers a response, so long streams pass through
untouched."""

from __future__ import annotations

from opentelemetry import trace
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.correlation import about, accept_or_new

SPAN_ATTRIBUTE = "jobledger.correlation_id"


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp, header: str = "X-Correlation-ID") -> None:
        self.app = app
        self.header = header
        self.raw_header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = accept_or_new(Headers(scope=scope).get(self.header))
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        trace.get_current_span().set_attribute(SPAN_ATTRIBUTE, correlation_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != self.raw_header
                ]
                headers.append((self.raw_header, correlation_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        with about(correlation_id=correlation_id):
            await self.app(scope, receive, send_with_id)
