"""/dlq: what is dead, and why, for the caller's tenant."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from domain.errors import JobNotFound
from gateway.access import DENIED, Operating
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
    router = APIRouter(tags=["dead letters"], responses=DENIED)

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
            if dead.tenant != who.tenant:
                continue
            status, error = _job_state(services, dead.job_id)
            items.append(
                DeadLetterOut(**{**dead.__dict__, "job_status": status, "job_error": error})
            )
        return items

    return router


def _job_state(services: Services, job_id: str | None) -> tuple[str | None, str | None]:
    try:
        job = services.ledger.get_job(UUID(job_id or ""))
    except (ValueError, JobNotFound):
        return None, None
    return job.status.value, job.error
