"""/audit/events: a tenant's events for auditors, streamed as NDJSON in ledger order
(``jobs:audit``). Each line is one event with its position, job, case, type, time,
actor, attempt, correlation id, trace context and data, params included: the audit
scope is the one that may see them. A schedule's events are lines too, with its
``schedule_id`` in place of the job's fields. The export reads the ledger a page at a time, by
position, up to its head when the request began, so a year of events never sits in memory; a
client resumes with ``after`` = the position of the last line it kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from domain.schedule import is_schedule_event
from gateway.access import DENIED, Auditing
from gateway.guarded import GuardedRoute, invalid
from gateway.schedule_schemas import ScheduleEventOut
from gateway.schemas import CASE_ID, EventOut, Rfc3339
from gateway.services import AuditLog, Services

PAGE = 1000
MAX_POSITION = 2**63 - 1


class AuditScheduleEventOut(ScheduleEventOut):
    """A line of a schedule's history: its creation, changes, pauses, resumes,
    deletion and each tick it fired (with the job it submitted)."""

    position: int
    schedule_id: UUID

    @classmethod
    def from_positioned(cls, event: Any, position: int) -> AuditScheduleEventOut:
        out = ScheduleEventOut.from_event(event)
        return cls(**out.model_dump(), position=position, schedule_id=event.originator_id)


class AuditEventOut(EventOut):
    position: int
    job_id: UUID
    case_id: str
    job_type: str

    @classmethod
    def from_positioned(cls, event: Any, position: int) -> AuditEventOut:
        out = EventOut.from_event(event)
        return cls(
            **out.model_dump(),
            position=position,
            job_id=event.originator_id,
            case_id=event.case_id,
            job_type=event.job_type,
        )


def build_router() -> APIRouter:
    router = APIRouter(tags=["audit"], responses=DENIED, route_class=GuardedRoute)

    @router.get(
        "/audit/events",
        summary="The tenant's events, NDJSON, in ledger order (jobs:audit)",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/x-ndjson": {}}, "description": "One event a line."},
            503: {"description": "This gateway has no audit log."},
        },
    )
    async def audit_events(
        request: Request,
        who: Auditing,
        since: Annotated[Rfc3339 | None, Query(description="Events recorded at or after.")] = None,
        until: Annotated[Rfc3339 | None, Query(description="Events recorded at or before.")] = None,
        case_id: Annotated[str | None, Query(pattern=CASE_ID)] = None,
        job_type: Annotated[str | None, Query(max_length=200)] = None,
        actor: Annotated[str | None, Query(max_length=500)] = None,
        after: Annotated[
            int, Query(ge=0, le=MAX_POSITION, description="Resume after this position.")
        ] = 0,
        limit: Annotated[int | None, Query(ge=1, description="At most this many lines.")] = None,
    ) -> StreamingResponse:
        services: Services = request.app.state.services
        audit = services.audit
        if audit is None:
            raise HTTPException(503, "this gateway has no audit log")
        if since is not None and until is not None and since > until:
            raise invalid(("query", "since"), "since is after until")
        head = await run_in_threadpool(audit.head)

        def kept(event: Any) -> bool:
            return (
                (since is None or event.timestamp >= since)
                and (until is None or event.timestamp <= until)
                and (actor is None or event.actor == actor)
            )

        async def lines() -> AsyncIterator[bytes]:
            sent = 0
            async for event, position in _pages(audit, who.tenant, after, head, case_id, job_type):
                if kept(event):
                    line = (
                        AuditScheduleEventOut if is_schedule_event(event) else AuditEventOut
                    ).from_positioned(event, position)
                    yield line.model_dump_json().encode()
                    yield b"\n"
                    sent += 1
                    if limit is not None and sent >= limit:
                        return

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return router


async def _pages(
    audit: AuditLog,
    tenant: str,
    after: int,
    head: int,
    case_id: str | None,
    job_type: str | None,
) -> AsyncIterator[tuple[Any, int]]:
    position = after
    while position < head:
        kept, position = await run_in_threadpool(
            audit.page,
            tenant,
            after=position,
            until=head,
            case_id=case_id,
            job_type=job_type,
            scan=PAGE,
        )
        for event, at in kept:
            yield event, at
