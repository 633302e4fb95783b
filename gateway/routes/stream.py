"""Live streams (Server-Sent Events): a job's progress, a case's jobs, a tenant's jobs.

Every SSE event's id is its ledger position; reconnect with ``Last-Event-ID`` to
get exactly what was missed. A job stream ends after the job's terminal event; the
case and tenant feeds stay open (``: keep-alive`` comments keep proxies from closing
them). All are tagged ``stream`` in OpenAPI."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Path, Response

from domain.errors import JobNotFound
from gateway.access import DENIED, Reading
from gateway.guarded import GuardedRoute
from gateway.schemas import CASE_ID, ErrorOut
from gateway.services import Services
from gateway.sse import ResumeTooOld, Streams, open_stream
from gateway.stream import Feed, StreamEventOut

LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=2**63 - 1,
        description="The id of the last event received: the stream resumes after it.",
    ),
]
TOO_OLD: dict[int | str, dict[str, Any]] = {
    409: {"description": "Last-Event-ID is further behind than a feed resumes from."}
}
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream; each event's data is a StreamEventOut, its id "
        "the ledger position.",
        "content": {"text/event-stream": {"schema": StreamEventOut.model_json_schema()}},
    },
}


def build_router(services: Services, streams: Streams) -> APIRouter:
    router = APIRouter(tags=["stream"], responses=DENIED, route_class=GuardedRoute)

    @router.get(
        "/jobs/{job_id}/progress",
        summary="A job's progress, status changes, errors and result, live",
        response_class=Response,
        responses={
            **EVENT_STREAM,
            204: {"description": "The job has finished and nothing follows Last-Event-ID."},
            404: {"model": ErrorOut, "description": "No such job (for this tenant)."},
        },
    )
    async def job_progress(
        job_id: UUID, who: Reading, last_event_id: LastEventId = None
    ) -> Response:
        job = await asyncio.to_thread(services.ledger.get_job, job_id)
        if job.tenant != who.tenant:
            raise JobNotFound
        feed = Feed(tenant=who.tenant, job_id=job_id)
        after = last_event_id if last_event_id is not None else 0  # the whole history
        return await open_stream(streams, feed, after, finished=job.status.is_terminal)

    @router.get(
        "/cases/{case_id}/stream",
        summary="Every event of a case's jobs, live (from Last-Event-ID, or from now)",
        response_class=Response,
        responses={**EVENT_STREAM, **TOO_OLD},
    )
    async def case_stream(
        case_id: Annotated[str, Path(pattern=CASE_ID)],
        who: Reading,
        last_event_id: LastEventId = None,
    ) -> Response:
        return await _resume(streams, Feed(tenant=who.tenant, case_id=case_id), last_event_id)

    @router.get(
        "/stream",
        summary="Every event of the caller's tenant, live (from Last-Event-ID, or from now)",
        response_class=Response,
        responses={**EVENT_STREAM, **TOO_OLD},
    )
    async def tenant_stream(who: Reading, last_event_id: LastEventId = None) -> Response:
        return await _resume(streams, Feed(tenant=who.tenant), last_event_id)

    return router


async def _resume(streams: Streams, feed: Feed, last_event_id: int | None) -> Response:
    try:
        return await open_stream(streams, feed, last_event_id)
    except ResumeTooOld as exc:
        raise HTTPException(409, str(exc)) from None
