"""Wire models. Domain objects are never serialised directly."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from domain.job import Job
from projections.projection import JobRow

CASE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IDEMPOTENCY_KEY_MAX = 128  # characters, in a header or a batch item
JOB_TYPE = r"^[a-z][a-z0-9_]{0,62}$"


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)")


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "an RFC 3339 time with its offset, e.g. 2026-12-03T09:30:00Z "
            "(a '+' in a query string is written %2B)"
        )
    return value


# A time as RFC 3339 writes it: no bare dates, no Unix seconds, no local times.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

RUN_AT = (
    "Not before this RFC 3339 time (with its offset); a time past runs now. At most "
    "JOBLEDGER_SCHEDULING__HORIZON_S ahead (a year by default). Not with delay_s."
)
DELAY_S = "Not before this many seconds from now. Not with run_at."
MAX_DELAY_S = 1e9  # beyond any horizon; bounds what a datetime can add


def run_at_of(run_at: datetime | None, delay_s: float | None) -> datetime | None:
    """When a job may start, from the request's ``run_at`` or ``delay_s`` (not both:
    the caller has refused that)."""
    if delay_s is not None:
        return datetime.now(UTC) + timedelta(seconds=delay_s)
    return run_at


class Timing(BaseModel):
    """A submit's optional time: ``run_at`` or ``delay_s``, not both."""

    run_at: Rfc3339 | None = Field(default=None, description=RUN_AT)
    delay_s: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, allow_inf_nan=False, description=DELAY_S
    )

    @model_validator(mode="after")
    def _one_of(self) -> Timing:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("give run_at or delay_s, not both")
        return self

    def when(self) -> datetime | None:
        return run_at_of(self.run_at, self.delay_s)


PRIORITY_DESCRIPTION = (
    "high, normal or low: a worker starts a waiting job of a higher priority first "
    "(a lower one is passed over a bounded number of times). Absent: the job type's own."
)
PriorityIn = Annotated[
    Literal["high", "normal", "low"] | None, Field(default=None, description=PRIORITY_DESCRIPTION)
]


class SubmitJob(Timing):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"type": "segment", "case_id": "case-42", "params": {"scan_id": "s-7"}}]
        },
    )

    type: str = Field(pattern=JOB_TYPE, description="A registered job type.")
    case_id: str = Field(pattern=CASE_ID, description="The patient case the job works on.")
    params: dict[str, Any] = Field(default_factory=dict, description="The job type's params.")
    priority: PriorityIn = None


class BatchItem(Timing):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=JOB_TYPE, description="A registered job type.")
    case_id: str = Field(pattern=CASE_ID, description="The patient case the job works on.")
    params: dict[str, Any] = Field(default_factory=dict, description="The job type's params.")
    idempotency_key: str | None = Field(
        default=None,
        max_length=IDEMPOTENCY_KEY_MAX,
        description="Submitting again with it returns this job.",
    )
    priority: PriorityIn = None


class SubmitBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[BatchItem] = Field(min_length=1, max_length=1000)


class BatchJobOut(BaseModel):
    id: UUID
    type: str
    case_id: str
    status: str
    created: bool = Field(description="False when the idempotency key named an earlier job.")
    run_at: datetime | None = Field(description="Not before then (null: at once).")


class BatchOut(BaseModel):
    jobs: list[BatchJobOut] = Field(description="In the order they were sent.")


class JobOut(BaseModel):
    id: UUID
    type: str
    case_id: str
    status: str
    progress: int
    progress_message: str
    attempt: int
    max_attempts: int
    priority: str
    error: str | None
    result: dict[str, Any] | None
    correlation_id: str
    cancel_requested: bool
    submitted_by: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retry_at: datetime | None
    run_at: datetime | None = Field(description="Scheduled: not before then (null: at once).")

    @classmethod
    def from_job(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            type=job.job_type,
            case_id=job.case_id,
            status=job.status.value,
            progress=job.progress,
            progress_message=job.progress_message,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            priority=job.priority,
            error=job.error,
            result=job.result,
            correlation_id=job.correlation_id,
            cancel_requested=job.cancel_requested,
            submitted_by=job.submitted_by,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            retry_at=job.retry_at,
            run_at=job.run_at,
        )

    @classmethod
    def from_row(cls, row: JobRow) -> JobOut:
        fields = dataclasses.asdict(row)
        return cls(id=row.job_id, type=row.job_type, **fields)

    model_config = ConfigDict(extra="ignore")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )


ENVELOPE = {
    "originator_id",
    "originator_version",
    "originator_topic",
    "timestamp",
    "tenant",
    "case_id",
    "job_type",
    "pool",
    "attempt",
    "actor",
    "correlation_id",
    "traceparent",
}


class EventOut(BaseModel):
    version: int = Field(description="The event's number in the job's own sequence, from 1.")
    type: str
    at: datetime
    attempt: int
    actor: str
    correlation_id: str
    traceparent: str
    data: dict[str, Any]

    @classmethod
    def from_event(cls, event: Any) -> EventOut:
        fields = vars(event)
        return cls(
            version=event.originator_version,
            type=type(event).__name__,
            at=event.timestamp,
            attempt=event.attempt,
            actor=event.actor,
            correlation_id=event.correlation_id,
            traceparent=event.traceparent,
            data={k: v for k, v in fields.items() if k not in ENVELOPE},
        )


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidRequestOut(BaseModel):
    """A 422: what is wrong, field by field; ``registered`` lists the job types when
    the type was unknown."""

    detail: list[FieldError]
    registered: list[str] | None = None


class ErrorOut(BaseModel):
    detail: Any
    status: str | None = None
