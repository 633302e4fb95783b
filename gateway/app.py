"""The HTTP gateway: validates input, appends commands' events to the ledger and
answers reads. It never talks to workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from gateway import errors
from gateway.caller import correlation_id_of
from gateway.routes import dlq, jobs, status_page, stream
from gateway.services import Services


def create_app(services: Services, *, correlation_header: str = "X-Correlation-ID") -> FastAPI:
    app = FastAPI(
        title="jobledger",
        summary="Background jobs on patient cases, every transition in a ledger.",
        version="0.1.0",
    )
    app.state.services = services
    errors.install(app)

    @app.middleware("http")
    async def correlate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.correlation_id = correlation_id_of(request, correlation_header)
        response = await call_next(request)
        response.headers[correlation_header] = request.state.correlation_id
        return response

    app.include_router(jobs.build_router(services))
    app.include_router(dlq.build_router())
    if services.streams is not None:
        app.include_router(stream.build_router(services, services.streams))
        app.include_router(status_page.build_router(services))
    return app
