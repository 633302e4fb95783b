"""/dlq: what is dead, and why, for the caller's tenant. A message in the DLQ says what
it likes in its headers: whose job it is comes from the ledger. A message that names
no job the ledger holds (a forged or undecodable one) is for operators in the broker's
management UI, not for any tenant."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from domain.errors import JobNotFound
from domain.job import Job
from gateway.access import DENIED, Operating
from gateway.guarded import GuardedRoute
from gateway.services import DeadLettersUnavailable, Services


class DeadLetterOut(BaseModel):
    message_id: str | None
    job_id: str | None
    job_type: str | None
    attempt: int | None
    correlation_id: str | None
    reason: str
    job_status: str | None
    job_error: str | None


def build_router() -> APIRouter:
    router = APIRouter(tags=["dead letters"], responses=DENIED, route_class=GuardedRoute)

    @router.get(
        "/dlq",
        summary="Messages in the dead-letter queue, with reasons",
        responses={503: {"description": "The broker's management API is unreachable."}},
    )
    def dead_letters(
        request: Request, who: Operating, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> list[DeadLetterOut]:
        services: Services = request.app.state.services
        if services.dead_letters is None:
            raise HTTPException(503, "the dead-letter queue is not configured")
        try:
            dead_letters = services.dead_letters.peek(limit)
        except DeadLettersUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        items = []
        for dead in dead_letters:
            job = _job_of(services, dead.job_id)
            if job is None or job.tenant != who.tenant:
                continue  # the ledger says whose job it is, never the message's headers
            fields = {k: v for k, v in dead.__dict__.items() if k != "tenant"}
            items.append(
                DeadLetterOut(
                    **{
                        **fields,
                        "job_type": job.job_type,
                        "job_status": job.status.value,
                        "job_error": job.error,
                    }
                )
            )
        return items

    return router


def _job_of(services: Services, job_id: str | None) -> Job | None:
    try:
        return services.ledger.get_job(UUID(job_id or ""))
    except (ValueError, JobNotFound):
        return None
