"""/jobs: submit, read, list, history, cancel and retry.

Single-job reads answer from the ledger itself, so a client always reads its own
writes. Case listings answer from the job view; a client that must see its write
there sends the ``X-Ledger-Position`` it was given, and the gateway waits (bounded)
for the view to reach it."""

from __future__ import annotations

import inspect
import logging
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel
from starlette.concurrency import run_in_threadpool

from application.submissions import Submission
from domain.errors import JobNotFound
from domain.job import Job, Status
from domain.ledger import Committed
from gateway.access import DENIED, Reading, Writing
from gateway.caller import Caller, origin_of
from gateway.fast_submit import fast_submit_route
from gateway.guarded import GuardedRoute, guard_of, invalid
from gateway.schemas import (
    CASE_ID,
    DELAY_S,
    IDEMPOTENCY_KEY_MAX,
    MAX_DELAY_S,
    PRIORITY_DESCRIPTION,
    RUN_AT,
    BatchJobOut,
    BatchOut,
    ErrorOut,
    EventOut,
    InvalidRequestOut,
    JobOut,
    JobPage,
    Rfc3339,
    SubmitBatch,
    SubmitJob,
    run_at_of,
)
from gateway.services import Services
from gateway.tracing import appending, appending_batch
from gateway.tracing import submitted as submitted_counter
from gateway.view_position import ViewPosition
from projections.projection import TenantFilter

log = logging.getLogger("jobledger.gateway")
POSITION_HEADER = "X-Ledger-Position"
VIEW_POSITION_HEADER = "X-View-Position"
JOB_TYPE = r"^[a-z][a-z0-9_]{0,62}$"  # as the registry names types

SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorOut,
        "description": "The Idempotency-Key names a job this tenant cannot see.",
    },
    409: {
        "model": ErrorOut,
        "description": "The Idempotency-Key was used for another type or case.",
    },
    422: {"model": InvalidRequestOut, "description": "Unknown type or invalid params."},
    429: {
        "model": ErrorOut,
        "description": "The tenant's quota (submits a second, jobs waiting): see Retry-After.",
    },
}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job (for this tenant)."},
    409: {"model": ErrorOut, "description": "The job's state does not allow this."},
}

CaseId = Annotated[str, Path(pattern=CASE_ID, description="The patient case.")]
MAX_POSITION = 2**63 - 1  # ledger positions are PostgreSQL bigints


def _a_position(cursor: str | None) -> str | None:
    if cursor is not None and int(cursor) > MAX_POSITION:
        raise ValueError(f"a cursor is at most {MAX_POSITION}")
    return cursor


Cursor = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,19}$", description="`next_cursor` of the previous page."),
    AfterValidator(_a_position),
]
PriorityQuery = Annotated[
    Literal["high", "normal", "low"] | None, Query(description=PRIORITY_DESCRIPTION)
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=IDEMPOTENCY_KEY_MAX,
        description="Submitting twice with the same key returns the first job.",
    ),
]


AsOf = Annotated[
    Rfc3339 | None,
    Query(
        description="RFC 3339 time with its offset: the job as the ledger had it then, "
        "folded from its events up to that time (404 if it did not exist yet)."
    ),
]
RunAt = Annotated[Rfc3339 | None, Query(description=RUN_AT)]
DelayS = Annotated[
    float | None, Query(ge=0, le=MAX_DELAY_S, allow_inf_nan=False, description=DELAY_S)
]
Until = Annotated[
    Rfc3339 | None,
    Query(description="RFC 3339 time with its offset: only the events recorded by then."),
]


def build_router(services: Services) -> APIRouter:
    router = _with_tenant_listing(
        APIRouter(prefix="/jobs", tags=["jobs"], responses=DENIED, route_class=GuardedRoute),
        services,
    )
    view_position = ViewPosition(lambda: services.view.max_tracking_id(services.ledger.name))

    def own_job(job_id: UUID, who: Caller) -> Job:
        job = services.ledger.get_job(job_id)
        if job.tenant != who.tenant:
            raise JobNotFound
        return job

    async def submit(
        request: Request,
        response: Response,
        who: Caller,
        *,
        job_type: str,
        case_id: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        run_at: datetime | None = None,
        priority: str | None = None,
    ) -> JobOut:
        # On the event loop: the job is validated here and awaited while the ledger's
        # writer appends it with the others' (no worker thread a request).
        job_id = services.submissions.job_id(who.tenant, idempotency_key)
        with appending("Submitted", job_id, job_type):
            submitted = await services.submissions.submit_async(
                job_id=job_id,
                tenant=who.tenant,
                case_id=case_id,
                job_type=job_type,
                params=params,
                origin=origin_of(request, who),
                run_at=run_at,
                priority=priority,
            )
            if submitted.created:
                log.info("accepted a job of type %s", job_type)
        if not submitted.created:
            response.headers["Location"] = f"/jobs/{job_id}"
            return JobOut.from_job(submitted.job)
        submitted_counter.add(1, {"job_type": job_type})
        return _written(response, Committed(submitted.job, submitted.position))

    @router.post(
        "",
        status_code=202,
        summary="Submit a job of any registered type",
        responses=SUBMIT_ERRORS,
    )
    async def submit_any(
        body: SubmitJob,
        request: Request,
        response: Response,
        who: Writing,
        idempotency_key: IdempotencyKey = None,
    ) -> JobOut:
        return await _submit_body(submit, request, response, who, body, idempotency_key)

    @router.post(
        "/batch",
        status_code=202,
        summary="Submit up to 1,000 jobs at once, all or none",
        responses={**SUBMIT_ERRORS, 422: {"description": "Invalid jobs, each named by index."}},
    )
    def submit_batch(
        body: SubmitBatch, request: Request, response: Response, who: Writing
    ) -> BatchOut:
        """Each job is validated as a single submit is; when any is invalid, none is
        submitted and every invalid one is named (``body.jobs.<index>…``). The valid
        batch is appended in one transaction. Idempotency keys are per job."""
        items = [
            Submission(
                job.type,
                job.case_id,
                job.params,
                job.idempotency_key,
                run_at=job.when(),
                priority=job.priority,
            )
            for job in body.jobs
        ]
        with appending_batch(len(items)):
            submitted = services.submissions.submit_many(
                tenant=who.tenant, submissions=items, origin=origin_of(request, who)
            )
        created = [s for s in submitted if s.created]
        for s in created:
            submitted_counter.add(1, {"job_type": s.job.job_type})
        if created:
            log.info("accepted a batch of %d jobs", len(created))
        position = max((s.position for s in submitted), default=0)
        if position:
            response.headers[POSITION_HEADER] = str(position)
        return BatchOut(
            jobs=[
                BatchJobOut(
                    id=s.job.id,
                    type=s.job.job_type,
                    case_id=s.job.case_id,
                    status=s.job.status.value,
                    created=s.created,
                    run_at=s.job.run_at,
                )
                for s in submitted
            ]
        )

    _add_fast_and_typed_submits(router, services, submit)

    @router.get("/{job_id}", responses=ERRORS, summary="A job's current state, or as of a time")
    def get_job(job_id: UUID, who: Reading, as_of: AsOf = None) -> JobOut:
        job = own_job(job_id, who)
        return JobOut.from_job(job if as_of is None else services.ledger.job_as_of(job_id, as_of))

    @router.get(
        "/{job_id}/events", responses=ERRORS, summary="A job's history, in order (up to a time)"
    )
    def job_events(job_id: UUID, who: Reading, until: Until = None) -> list[EventOut]:
        own_job(job_id, who)
        history = (
            services.ledger.job_history(job_id)
            if until is None
            else services.ledger.job_history_until(job_id, until)
        )
        return [EventOut.from_event(e) for e in history]

    @router.get(
        "/{case_id}/jobs",
        summary="The jobs of a case, newest first",
        responses={422: {"description": "Invalid query, or X-Ledger-Position beyond the ledger."}},
    )
    async def case_jobs(
        case_id: CaseId,
        who: Reading,
        status: Status | None = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        x_ledger_position: Annotated[int | None, Header(ge=0, le=MAX_POSITION)] = None,
        as_of: AsOf = None,
    ) -> JobPage:
        if as_of is not None:  # from the ledger: the view's lag does not matter
            return await run_in_threadpool(
                _case_as_of, services, who.tenant, case_id, as_of, status, cursor, limit
            )
        if x_ledger_position and x_ledger_position > view_position.position:
            head = await run_in_threadpool(services.ledger.recorder.max_notification_id) or 0
            if x_ledger_position > head:
                raise invalid(
                    ("header", POSITION_HEADER),
                    f"X-Ledger-Position {x_ledger_position} is beyond the ledger ({head})",
                )
            await view_position.reached(x_ledger_position, services.read_your_writes_timeout_s)
        page = await run_in_threadpool(
            services.view.list_case,
            who.tenant,
            case_id,
            status=status.value if status else None,
            cursor=cursor,
            limit=limit,
        )
        return JobPage(items=[JobOut.from_row(r) for r in page.rows], next_cursor=page.next_cursor)

    @router.post("/{job_id}/cancel", responses=ERRORS, summary="Cancel a job")
    def cancel(job_id: UUID, request: Request, response: Response, who: Writing) -> JobOut:
        own_job(job_id, who)
        with appending("Cancel", job_id):
            committed = services.ledger.cancel_job(job_id, origin_of(request, who))
        return _written(response, committed)

    @router.post(
        "/{job_id}/retry",
        status_code=202,
        responses=ERRORS,
        summary="Run a failed or cancelled job again",
    )
    def retry(job_id: UUID, request: Request, response: Response, who: Writing) -> JobOut:
        own_job(job_id, who)
        with appending("RetryRequested", job_id):
            committed = services.ledger.retry_job(job_id, origin_of(request, who))
        return _written(response, committed)

    return router


def _with_tenant_listing(router: APIRouter, services: Services) -> APIRouter:
    """GET /jobs: the tenant's jobs across its cases (the dashboard's list)."""

    @router.get(
        "",
        summary="The tenant's jobs across its cases, newest first, filtered",
        responses={
            200: {
                "headers": {
                    VIEW_POSITION_HEADER: {
                        "description": "The view's position before this page was read: "
                        "follow GET /stream from it (Last-Event-ID) and miss nothing.",
                        "schema": {"type": "integer"},
                    }
                }
            }
        },
    )
    def tenant_jobs(
        who: Reading,
        response: Response,
        status: Status | None = None,
        type: Annotated[str | None, Query(pattern=JOB_TYPE, description="A job type.")] = None,
        case_id: Annotated[str | None, Query(pattern=CASE_ID)] = None,
        since: Annotated[
            Rfc3339 | None, Query(description="Submitted at or after (RFC 3339).")
        ] = None,
        until: Annotated[
            Rfc3339 | None, Query(description="Submitted at or before (RFC 3339).")
        ] = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> JobPage:
        position = services.view.max_tracking_id(services.ledger.name) or 0
        where = TenantFilter(
            status=status.value if status else None,
            job_type=type,
            case_id=case_id,
            since=since,
            until=until,
        )
        page = services.view.list_tenant(who.tenant, where, cursor=cursor, limit=limit)
        response.headers[VIEW_POSITION_HEADER] = str(position)
        return JobPage(items=[JobOut.from_row(r) for r in page.rows], next_cursor=page.next_cursor)

    return router


AS_OF_CHUNK = 200


def _case_as_of(
    services: Services,
    tenant: str,
    case_id: str,
    at: datetime,
    status: Status | None,
    cursor: str | None,
    limit: int,
) -> JobPage:
    """The case's jobs as they were at ``at``, newest first: the jobs submitted by then
    (the view's index of submissions, facts that never change), each folded from its
    own events up to then; ``status`` filters on that state."""
    found: list[tuple[Job, int]] = []
    before = int(cursor) if cursor else None
    while len(found) <= limit:
        chunk = services.view.case_submissions(
            tenant, case_id, by=at, before=before, limit=AS_OF_CHUNK
        )
        for job_id, position in chunk:
            job = services.ledger.job_as_of(job_id, at)
            if status is None or job.status is status:
                found.append((job, position))
                if len(found) > limit:
                    break
        if len(chunk) < AS_OF_CHUNK:
            break
        before = chunk[-1][1]
    page = found[:limit]
    next_cursor = str(page[-1][1]) if len(found) > limit else None
    return JobPage(items=[JobOut.from_job(job) for job, _ in page], next_cursor=next_cursor)


def _add_typed_submit(router: APIRouter, name: str, model: type[BaseModel], submit: Any) -> None:
    """POST /jobs/{case_id}/<name>, whose body is the job type's own params model."""

    async def endpoint(
        case_id: str,
        params: BaseModel,
        request: Request,
        response: Response,
        who: Caller,
        idempotency_key: str | None = None,
        run_at: datetime | None = None,
        delay_s: float | None = None,
        priority: str | None = None,
    ) -> JobOut:
        if run_at is not None and delay_s is not None:
            raise invalid(("query", "delay_s"), "give run_at or delay_s, not both")
        return await submit(  # type: ignore[no-any-return]
            request,
            response,
            who,
            job_type=name,
            case_id=case_id,
            params=params.model_dump(mode="json"),
            idempotency_key=idempotency_key,
            run_at=run_at_of(run_at, delay_s),
            priority=priority,
        )

    param = inspect.Parameter
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            param("case_id", param.POSITIONAL_OR_KEYWORD, annotation=CaseId),
            param("params", param.POSITIONAL_OR_KEYWORD, annotation=model),
            param("request", param.POSITIONAL_OR_KEYWORD, annotation=Request),
            param("response", param.POSITIONAL_OR_KEYWORD, annotation=Response),
            param("who", param.POSITIONAL_OR_KEYWORD, annotation=Writing),
            param("idempotency_key", param.KEYWORD_ONLY, annotation=IdempotencyKey, default=None),
            param("run_at", param.KEYWORD_ONLY, annotation=RunAt, default=None),
            param("delay_s", param.KEYWORD_ONLY, annotation=DelayS, default=None),
            param("priority", param.KEYWORD_ONLY, annotation=PriorityQuery, default=None),
        ],
        return_annotation=JobOut,
    )
    router.add_api_route(
        f"/{{case_id}}/{name}",
        endpoint,
        methods=["POST"],
        status_code=202,
        response_model=JobOut,
        responses=SUBMIT_ERRORS,
        summary=f"Submit a {name} job on a case",
    )


async def _submit_body(
    submit: Any,
    request: Request,
    response: Response,
    who: Caller,
    body: SubmitJob,
    idempotency_key: str | None,
) -> JobOut:
    """``POST /jobs``: the submit of ``body`` (the FastAPI route's and the fast one's)."""
    out: JobOut = await submit(
        request,
        response,
        who,
        job_type=body.type,
        case_id=body.case_id,
        params=body.params,
        idempotency_key=idempotency_key,
        run_at=body.when(),
        priority=body.priority,
    )
    return out


def _add_fast_and_typed_submits(router: APIRouter, services: Services, submit: Any) -> None:
    """``POST /jobs/<type>`` for each registered type; and first of all, a route that
    answers a well-formed ``POST /jobs`` without FastAPI's work per request and hands
    anything else on to the FastAPI route (gateway/fast_submit.py)."""
    (submit_any,) = [
        r
        for r in router.routes
        if isinstance(r, APIRoute) and r.path == "/jobs" and r.methods == {"POST"}
    ]
    guard = guard_of(submit_any.dependant)
    assert guard is not None
    router.routes.insert(0, fast_submit_route(submit_any, partial(_submit_body, submit), guard))
    for name in services.job_types.names():
        _add_typed_submit(router, name, services.job_types.get(name).submission_model, submit)


def _written(response: Response, committed: Committed) -> JobOut:
    response.headers["Location"] = f"/jobs/{committed.job.id}"
    if committed.position:
        response.headers[POSITION_HEADER] = str(committed.position)
    return JobOut.from_job(committed.job)
