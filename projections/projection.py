"""JobProjection: maps each ledger event to the change it makes to the job view."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Tracking

from domain.job import Job, status_after


@dataclass(frozen=True)
class ViewChange:
    """One row's change: a new row when ``insert``, otherwise an update of ``values``."""

    job_id: UUID
    values: dict[str, Any]
    insert: bool = False


@dataclass(frozen=True)
class JobRow:
    """One job as the read side knows it."""

    job_id: UUID
    tenant: str
    case_id: str
    job_type: str
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
    updated_at: datetime
    submitted_position: int
    position: int
    run_at: datetime | None
    handed_over: bool


# The fields a row shares with the Job aggregate, under the same name.
SHARED_WITH_THE_JOB = (
    "tenant",
    "case_id",
    "job_type",
    "progress",
    "progress_message",
    "attempt",
    "max_attempts",
    "priority",
    "error",
    "result",
    "correlation_id",
    "cancel_requested",
    "submitted_by",
    "submitted_at",
    "started_at",
    "finished_at",
    "retry_at",
    "run_at",
    "handed_over",
)


def differences(row: JobRow | None, job: Job) -> list[str]:
    """The fields in which a view row differs from the job replayed from the ledger
    (``["missing"]`` when there is no row)."""
    if row is None:
        return ["missing"]
    differ = [name for name in SHARED_WITH_THE_JOB if getattr(row, name) != getattr(job, name)]
    if row.status != job.status.value:
        differ.insert(0, "status")
    return differ


@dataclass(frozen=True)
class Unprojectable:
    """An event the view could not take (e.g. a value its database refuses): recorded
    with its position, so the projection goes on and the event can be found again."""

    position: int
    job_id: UUID
    event: str
    reason: str  # the error's type and code, never the value


@dataclass(frozen=True)
class Page:
    rows: Sequence[JobRow]
    next_cursor: str | None = field(default=None)


@dataclass(frozen=True)
class TenantFilter:
    """Which of a tenant's jobs a listing across its cases shows: each filter given
    narrows it; ``since`` and ``until`` bound the submission time (inclusive)."""

    status: str | None = None
    job_type: str | None = None
    case_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def accepts(self, row: JobRow) -> bool:
        return (
            (self.status is None or row.status == self.status)
            and (self.job_type is None or row.job_type == self.job_type)
            and (self.case_id is None or row.case_id == self.case_id)
            and (self.since is None or row.submitted_at >= self.since)
            and (self.until is None or row.submitted_at <= self.until)
        )


class JobView(Protocol):
    """The read model: applies batches of changes with their tracking position
    atomically, and answers queries."""

    def apply(self, changes: Sequence[ViewChange], tracking: Tracking) -> None: ...

    def skip(self, unprojectable: Unprojectable, tracking: Tracking) -> None:
        """Record the event as unprojectable, with its position, in one transaction."""
        ...

    def unprojectable(self) -> list[Unprojectable]: ...

    def get(self, job_id: UUID) -> JobRow | None: ...

    def list_case(
        self,
        tenant: str,
        case_id: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page: ...

    def case_submissions(
        self, tenant: str, case_id: str, *, by: datetime, before: int | None, limit: int
    ) -> list[tuple[UUID, int]]:
        """The jobs submitted to a case by a time, newest first: (job id, position)."""
        ...

    def list_tenant(
        self, tenant: str, where: TenantFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """A tenant's jobs across its cases, newest first; the cursor is the last
        row's submission position."""
        ...

    def max_tracking_id(self, application_name: str) -> int | None: ...

    def count_waiting(self, tenant: str) -> int:
        """The tenant's jobs that wait: scheduled for later, queued, or for a retry."""
        ...


class JobProjection:
    """Pure: an event in, the view changes out. The runner applies them."""

    name = "job_view"

    def changes(self, event: Any, position: int) -> Iterable[ViewChange]:
        job_id: UUID = event.originator_id
        at: datetime = event.timestamp
        values = _values_for(event)
        if values is None:
            return ()
        values.update(status=status_after(event).value, updated_at=at, position=position)
        if isinstance(event, Job.Submitted):
            values["submitted_position"] = position
            return (ViewChange(job_id, values, insert=True),)
        if isinstance(event, Job.Event):
            values["attempt"] = event.attempt
        return (ViewChange(job_id, values),)


def _values_for(event: Any) -> dict[str, Any] | None:
    """The fields an event changes, besides the status (``status_after``), the time
    and the position, which every event sets."""
    match event:
        case Job.Submitted():
            return {
                "tenant": event.tenant,
                "case_id": event.case_id,
                "job_type": event.job_type,
                "progress": 0,
                "progress_message": "",
                "attempt": 0,
                "max_attempts": event.max_attempts,
                "priority": event.priority,
                "error": None,
                "result": None,
                "correlation_id": event.correlation_id,
                "cancel_requested": False,
                "submitted_by": event.actor,
                "submitted_at": event.timestamp,
                "started_at": None,
                "finished_at": None,
                "retry_at": None,
                "run_at": event.run_at,
                "handed_over": False,
            }
        case Job.HandedOver():
            return {"handed_over": True}
        case Job.Started():
            return {
                "started_at": event.timestamp,
                "finished_at": None,
                "error": None,
                "retry_at": None,
                "progress": 0,
                "progress_message": "",
            }
        case Job.ProgressReported():
            return {"progress": event.percent, "progress_message": event.message}
        case Job.Succeeded():
            return {"progress": 100, "result": event.result, "finished_at": event.timestamp}
        case Job.AttemptFailed():
            return {"error": event.error, "retry_at": event.retry_at}
        case Job.Failed():
            return {"error": event.error, "finished_at": event.timestamp}
        case Job.CancelRequested():
            return {"cancel_requested": True}
        case Job.Cancelled():
            return {"finished_at": event.timestamp}
        case Job.RetryRequested():
            return {"cancel_requested": False, "retry_at": None}
        case Job.AttemptInterrupted():
            return {"retry_at": event.retry_at}
    return None
