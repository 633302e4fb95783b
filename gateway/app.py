"""The HTTP gateway: validates input, appends commands' events to the ledger and
answers reads. It never talks to workers."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import PlainTextResponse, Response

from gateway import errors
from gateway.correlation import CorrelationMiddleware
from gateway.limits import RequestLimits
from gateway.ops import Ops
from gateway.routes import audit, dashboard, dlq, jobs, ops, queues, schedules, status_page, stream
from gateway.services import Services


def create_app(
    services: Services,
    *,
    correlation_header: str = "X-Correlation-ID",
    operations: Ops | None = None,
    trace_url: str = "",
) -> FastAPI:
    app = FastAPI(
        title="jobledger",
        summary="Background jobs on patient cases, every transition in a ledger.",
        version="0.1.0",
        # Our own instrumentation (infra/telemetry.py) makes the gateway's spans and
        # metrics, sanitised; FastAPI's native telemetry would add a second set, and
        # log validation failures and exceptions with their messages, which can
        # quote a request's input.
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    app.state.services = services
    errors.install(app)
    # The last added runs first: every answer, a refusal of the limits included,
    # carries the correlation id (added next).
    app.add_middleware(
        RequestLimits,
        max_body_bytes=services.max_body_bytes,
        max_header_bytes=services.max_header_bytes,
        body_timeout_s=services.body_timeout_s,
        larger_bodies={"/jobs/batch": services.max_batch_body_bytes},
    )
    carry_correlation_ids(app, correlation_header)

    _route(app, jobs.build_router(services))
    _route(app, dlq.build_router())
    _route(app, audit.build_router())
    if services.schedules is not None:
        _route(app, schedules.build_router(services.schedules))
    _route(app, ops.build_router(operations or Ops()))
    _route(app, queues.build_router())
    _route(app, dashboard.build_router(trace_url))
    if services.streams is not None:
        _route(app, stream.build_router(services, services.streams))
        _route(app, status_page.build_router(services))
    return app


def _route(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, on the app's own list. ``include_router`` adds a branch
    that every request walks: FastAPI sums the routes' version over every included
    router to check its cache, then matches the branch's routes in turn (a sixth of
    the gateway's CPU on a submit). A router's routes already carry their full path
    and their router's class, tags, responses and dependencies, so the app serves and
    documents them the same."""
    app.router.routes.extend(router.routes)


def carry_correlation_ids(app: FastAPI, header: str) -> None:
    """The correlation id on every answer. The middleware puts it on responses and in
    the request's state; a 500 from an unhandled error is written by Starlette's
    outermost handler, outside every middleware, so that handler puts it there too.
    The error goes to the log, never to the client."""
    app.add_middleware(CorrelationMiddleware, header=header)

    async def unhandled(request: Request, exc: Exception) -> Response:
        correlation_id = getattr(request.state, "correlation_id", "")
        headers = {header: correlation_id} if correlation_id else None
        return PlainTextResponse("Internal Server Error", status_code=500, headers=headers)

    app.add_exception_handler(Exception, unhandled)
