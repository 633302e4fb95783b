"""One table maps the domain's errors to HTTP statuses; routes hold no try/except
for domain cases."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from application.quotas import QuotaExceeded, retry_after
from application.submissions import BatchRefused, BeyondHorizon
from application.ticks import InvalidSchedule
from domain.errors import (
    DuplicateSubmission,
    InvalidParams,
    InvalidPriority,
    InvalidProgress,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    UnknownJobType,
)
from domain.schedule import ScheduleDeleted, ScheduleExists, ScheduleNotFound

STATUS: dict[type[LedgerError], int] = {
    JobNotFound: 404,
    InvalidTransition: 409,
    DuplicateSubmission: 409,
    UnknownJobType: 422,
    InvalidParams: 422,
    InvalidProgress: 422,
    BeyondHorizon: 422,
    ScheduleNotFound: 404,
    ScheduleDeleted: 404,
    ScheduleExists: 409,
    InvalidSchedule: 422,
    InvalidPriority: 422,
}


def _status_of(exc: LedgerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def ledger_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    body: dict[str, object] = {"detail": str(exc)}
    match exc:
        case InvalidTransition():
            body["status"] = exc.status
        case UnknownJobType():
            body["detail"] = [
                {"loc": ["body", "type"], "msg": str(exc), "type": "unknown_job_type"}
            ]
            body["registered"] = exc.registered
        case InvalidParams():
            body["detail"] = [
                {**e, "loc": ["body", "params", *_as_list(e["loc"])]} for e in exc.errors
            ]
        case BeyondHorizon():
            body["detail"] = [{"loc": ["body", "run_at"], "msg": str(exc), "type": "value_error"}]
        case InvalidSchedule():
            body["detail"] = [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]
    return JSONResponse(body, status_code=_status_of(exc))


def _as_list(loc: object) -> list[object]:
    return list(loc) if isinstance(loc, (list, tuple)) else [loc]


async def batch_refused(request: Request, exc: Exception) -> JSONResponse:
    """Every invalid job of a batch, each under its index (``body.jobs.<n>``)."""
    assert isinstance(exc, BatchRefused)
    detail: list[dict[str, object]] = []
    for n, error in exc.errors:
        where: list[object] = ["body", "jobs", n]
        match error:
            case InvalidParams():
                detail += [
                    {**e, "loc": [*where, "params", *_as_list(e["loc"])]} for e in error.errors
                ]
            case UnknownJobType():
                detail.append(
                    {"loc": [*where, "type"], "msg": str(error), "type": "unknown_job_type"}
                )
            case BeyondHorizon():
                detail.append({"loc": [*where, "run_at"], "msg": str(error), "type": "value_error"})
            case _:
                detail.append({"loc": where, "msg": str(error), "type": "value_error"})
    return JSONResponse({"detail": detail}, status_code=422)


async def quota_exceeded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuotaExceeded)
    return JSONResponse(
        {"detail": str(exc)},
        status_code=429,
        headers={"Retry-After": retry_after(exc.retry_after_s)},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(BatchRefused, batch_refused)
    app.add_exception_handler(LedgerError, ledger_error)
    app.add_exception_handler(QuotaExceeded, quota_exceeded)
