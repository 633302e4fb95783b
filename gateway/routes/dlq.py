"""/dlq: what is dead, and why, for the caller's tenant. A message in the DLQ says what
it likes in its headers: whose job it is comes from the ledger. A message that names
no job the ledger holds (a forged or undecodable one) is for operators in the broker's
management UI, not for any tenant."""

from __future__ import annotations

import logging
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import InvalidTransition, JobNotFound
from domain.job import Job, Status
from gateway.access import DENIED, Operating
from gateway.caller import origin_of
from gateway.guarded import GuardedRoute
from gateway.services import DeadLettersUnavailable, Services
from gateway.tracing import appending

log = logging.getLogger("jobledger.gateway")
MAX_REDRIVE = 100


class DeadLetterOut(BaseModel):
    message_id: str | None
    job_id: str | None
    job_type: str | None
    attempt: int | None
    correlation_id: str | None
    reason: str
    job_status: str | None
    job_error: str | None
    superseded: bool = Field(
        description="The job has moved on since this message died (retried, re-driven, or "
        "failed again at a later attempt): the message is left in the queue, and moved back "
        "by hand it is a stale delivery the worker drops."
    )


class Redrive(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_ids: list[UUID] = Field(min_length=1, max_length=MAX_REDRIVE)


class RedriveOut(BaseModel):
    job_id: UUID
    outcome: Literal["retried", "refused", "not_found"]
    status: str | None = Field(description="The job's status after the request.")
    detail: str = ""


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
                        "superseded": not _dead(job, dead.attempt),
                    }
                )
            )
        return items

    @router.post(
        "/dlq/redrive",
        summary="Run dead jobs again: the operator's retry, recorded with their subject",
    )
    def redrive(body: Redrive, request: Request, who: Operating) -> list[RedriveOut]:
        """Each job named is retried as ``POST /jobs/{id}/retry`` retries it
        (``RetryRequested``, its actor the caller's token subject), and the dispatcher
        sends a new delivery. A job of another tenant is ``not_found``; one that is
        not failed or cancelled is ``refused``. The dead message itself stays in the
        DLQ, marked ``superseded`` in the listing."""
        services: Services = request.app.state.services
        origin = origin_of(request, who)
        results = []
        for job_id in dict.fromkeys(body.job_ids):
            job = _job_of(services, str(job_id))
            if job is None or job.tenant != who.tenant:
                results.append(RedriveOut(job_id=job_id, outcome="not_found", status=None))
                continue
            try:
                with appending("RetryRequested", job_id):
                    committed = services.ledger.retry_job(job_id, origin)
            except InvalidTransition as exc:
                results.append(
                    RedriveOut(job_id=job_id, outcome="refused", status=exc.status, detail=str(exc))
                )
                continue
            log.info("job %s re-driven from the DLQ", job_id)
            results.append(
                RedriveOut(job_id=job_id, outcome="retried", status=committed.job.status.value)
            )
        return results

    return router


def _dead(job: Job, attempt: int | None) -> bool:
    """The job is still where its dead message left it."""
    ended = job.status in (Status.FAILED, Status.CANCELLED)
    return ended and (attempt is None or job.attempt == attempt)


def _job_of(services: Services, job_id: str | None) -> Job | None:
    try:
        return services.ledger.get_job(UUID(job_id or ""))
    except (ValueError, JobNotFound):
        return None
