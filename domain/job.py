"""The Job aggregate: a job's whole lifecycle as events.

scheduled ──start (at run_at)──┐   scheduled ──cancel──► cancelled
                               ▼
queued ──start──► running ──succeed──► succeeded
  ▲   │             │  ├──fail (attempts left)──► retry_scheduled ──start──► running
  │   │             │  └──fail (terminal)───────► failed
  │   └─cancel──►   └──cancel (then the worker stops it)──► cancelled
  └──────────── retry (from failed or cancelled) ◄───────────────┘
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import storable
from domain.errors import (
    InvalidProgress,
    InvalidTransition,
    LedgerError,
    NotDueYet,
    StaleDelivery,
)
from domain.origin import Origin
from domain.priority import Priority


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_SCHEDULED = "retry_scheduled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
STARTABLE = frozenset({Status.SCHEDULED, Status.QUEUED, Status.RETRY_SCHEDULED})


class Job(Aggregate):
    """A unit of work on a patient case, from submission to its outcome."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Job:
        """The copy a command changes (the repository hands out copies of the jobs it
        caches). Every event rebinds the job's attributes and none changes a value in
        place (its params and result are never changed after they are recorded), so
        only the list of pending events must be the copy's own: 2 us against 31 for a
        copy of every value, taken twice for every attempt."""
        copied = copy.copy(self)
        copied._pending_events = list(self._pending_events)
        memo[id(self)] = copied
        return copied

    class Event(Aggregate.Event):
        """Every event of a job carries the job's identity and its cause."""

        tenant: str
        case_id: str
        job_type: str
        pool: str
        attempt: int
        actor: str
        correlation_id: str
        traceparent: str

    class Submitted(Aggregate.Created):
        tenant: str
        case_id: str
        job_type: str
        attempt: int
        actor: str
        correlation_id: str
        traceparent: str
        params: dict[str, Any]
        pool: str
        max_attempts: int
        run_at: datetime | None  # v2: not before then (None: at once)
        priority: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["run_at"] = None  # submitted before jobs could be delayed
            state["priority"] = Priority.NORMAL.value  # submitted before priorities

    class Started(Event):
        """``delivery_id`` names the message copy that started the attempt: that copy,
        and no duplicate of it, is the one a failed job leaves in the DLQ."""

        worker_id: str
        delivery_id: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["delivery_id"] = ""  # started before copies were told apart

        def apply(self, job: Job) -> None:
            job.status, job.attempt, job.worker_id = (
                status_after(self),
                self.attempt,
                self.worker_id,
            )
            job.delivery_id = self.delivery_id
            job.started_at, job.finished_at, job.error = self.timestamp, None, None
            job.retry_at = None
            job.progress, job.progress_message = 0, ""

    class ProgressReported(Event):
        percent: int
        message: str

        def apply(self, job: Job) -> None:
            job.progress, job.progress_message = self.percent, self.message

    class Succeeded(Event):
        result: dict[str, Any]

        def apply(self, job: Job) -> None:
            job.status, job.result, job.progress = status_after(self), self.result, 100
            job.finished_at = self.timestamp

    class AttemptFailed(Event):
        error: str
        retryable: bool
        retry_at: datetime | None
        traceback: str  # where the handler raised ("" when it did not raise)

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["traceback"] = ""  # recorded before tracebacks were kept

        def apply(self, job: Job) -> None:
            job.error, job.retry_at, job.status = self.error, self.retry_at, status_after(self)

    class Failed(Event):
        error: str

        def apply(self, job: Job) -> None:
            job.status, job.error, job.finished_at = status_after(self), self.error, self.timestamp

    class CancelRequested(Event):
        def apply(self, job: Job) -> None:
            job.cancel_requested = True

    class Cancelled(Event):
        def apply(self, job: Job) -> None:
            job.status, job.finished_at = status_after(self), self.timestamp

    class RetryRequested(Event):
        def apply(self, job: Job) -> None:
            job.status, job.cancel_requested, job.retry_at = status_after(self), False, None
            job.attempts_allowed = self.attempt + job.max_attempts

    class HandedOver(Event):
        """A scheduled job held in the ledger (its ``run_at`` was beyond what the delay
        queues carry when it was submitted) came within their range: the dispatcher
        sends its delivery to arrive at ``run_at``, in the lane of its ``priority``."""

        run_at: datetime
        priority: str

        def apply(self, job: Job) -> None:
            job.handed_over = True

    class AttemptInterrupted(Event):
        """The worker stopped before the handler finished (a shutdown); the attempt
        does not count against the job, and it runs again at ``retry_at``."""

        reason: str
        retry_at: datetime

        def apply(self, job: Job) -> None:
            job.status, job.retry_at = status_after(self), self.retry_at
            job.attempts_allowed += 1

    def __init__(
        self,
        *,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        pool: str,
        max_attempts: int,
        priority: str,
        actor: str,
        correlation_id: str,
        timestamp: datetime,
        run_at: datetime | None = None,
    ) -> None:
        self.tenant, self.case_id, self.job_type = tenant, case_id, job_type
        self.params, self.pool, self.max_attempts = params, pool, max_attempts
        self.priority = priority
        self.correlation_id = correlation_id
        self.submitted_by, self.submitted_at = actor, timestamp
        self.run_at = run_at
        self.handed_over = False
        self.status = Status.QUEUED if run_at is None else Status.SCHEDULED
        self.attempt = 0
        self.attempts_allowed = max_attempts
        self.worker_id = ""
        self.delivery_id = ""
        self.progress, self.progress_message = 0, ""
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.retry_at: datetime | None = None
        self.cancel_requested = False
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None

    @classmethod
    def submit(
        cls,
        *,
        job_id: UUID,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        pool: str,
        max_attempts: int,
        origin: Origin,
        run_at: datetime | None = None,
        priority: str = Priority.NORMAL,
    ) -> Job:
        """``run_at``: not before then; a time already past is no delay at all."""
        if max_attempts < 1:
            raise LedgerError("a job needs at least one attempt")
        if run_at is not None and run_at <= cls.Event.create_timestamp():
            run_at = None
        priority = Priority.of(priority).value
        return cls._create(
            cls.Submitted,
            id=job_id,
            tenant=tenant,
            case_id=case_id,
            job_type=job_type,
            attempt=0,
            params=params,
            pool=pool,
            max_attempts=max_attempts,
            priority=priority,
            actor=storable.text(origin.actor),
            correlation_id=storable.text(origin.correlation_id),
            traceparent=origin.traceparent,
            run_at=run_at,
        )

    # Commands. Each checks the state machine, then records one or more events.

    def start(self, attempt: int, worker_id: str, origin: Origin, delivery_id: str = "") -> None:
        if self.status not in STARTABLE or attempt != self.attempt + 1:
            raise StaleDelivery(self.status, f"start attempt {attempt} of")
        if (wait_s := self.due_in_s()) > 0:
            raise NotDueYet(self.run_at, wait_s)
        self._record(
            self.Started, origin, attempt=attempt, worker_id=worker_id, delivery_id=delivery_id
        )

    def due_in_s(self, now: datetime | None = None) -> float:
        """How long a scheduled job must still wait before it may start (0: it may)."""
        if self.status is not Status.SCHEDULED or self.run_at is None:
            return 0.0
        now = now or self.Event.create_timestamp()
        return max((self.run_at - now).total_seconds(), 0.0)

    def started_by(self, attempt: int, delivery_id: str) -> bool:
        """Is ``attempt`` the job's current one, started by the copy ``delivery_id``?"""
        return self.attempt == attempt and self.delivery_id == delivery_id

    def report_progress(
        self, percent: int, message: str, origin: Origin, *, attempt: int | None = None
    ) -> None:
        self._require(Status.RUNNING, command="report progress on", attempt=attempt)
        if not 0 <= percent <= 100:
            raise InvalidProgress
        message = storable.text(message)
        self._record(self.ProgressReported, origin, percent=percent, message=message)

    def succeed(
        self, result: dict[str, Any], origin: Origin, *, attempt: int | None = None
    ) -> None:
        self._require(Status.RUNNING, command="complete", attempt=attempt)
        self._record(self.Succeeded, origin, result=storable.json_value(result))

    def fail_attempt(
        self,
        error: str,
        *,
        retry_at: datetime | None,
        retryable: bool,
        origin: Origin,
        attempt: int | None = None,
        traceback: str = "",
    ) -> None:
        """Record a failed attempt. With ``retry_at`` the job waits for its next
        attempt; without it, or with no attempts left, the job has failed."""
        self._require(Status.RUNNING, command="fail", attempt=attempt)
        error = storable.text(error)
        if self.attempt >= self.attempts_allowed or self.cancel_requested:
            retry_at = None
        self._record(
            self.AttemptFailed,
            origin,
            error=error,
            retryable=retryable,
            retry_at=retry_at,
            traceback=storable.text(traceback),
        )
        if retry_at is None and self.cancel_requested:
            self._record(self.Cancelled, origin)  # the cancel wins over another attempt
        elif retry_at is None:
            self._record(self.Failed, origin, error=error)

    @property
    def attempts_left(self) -> int:
        return max(self.attempts_allowed - self.attempt, 0)

    def cancel(self, origin: Origin) -> None:
        """A job that is not running is cancelled at once and never runs; a running
        job is asked to stop, and is cancelled when its worker has stopped it."""
        if self.status in STARTABLE:
            self._record(self.Cancelled, origin)
        elif self.status is Status.RUNNING:
            if not self.cancel_requested:
                self._record(self.CancelRequested, origin)
        else:
            raise InvalidTransition(self.status, "cancel")

    def confirm_cancelled(self, origin: Origin, *, attempt: int | None = None) -> None:
        """The worker stopped a running job whose cancel was requested."""
        self._require(Status.RUNNING, command="confirm the cancel of", attempt=attempt)
        if not self.cancel_requested:
            raise InvalidTransition(self.status, "confirm an unrequested cancel of")
        self._record(self.Cancelled, origin)

    def interrupt(self, reason: str, *, retry_at: datetime, origin: Origin, attempt: int) -> None:
        """The worker gave the attempt up unfinished; another worker runs it again."""
        self._require(Status.RUNNING, command="interrupt", attempt=attempt)
        reason = storable.text(reason)
        if self.cancel_requested:
            self._record(self.Cancelled, origin)
        else:
            self._record(self.AttemptInterrupted, origin, reason=reason, retry_at=retry_at)

    def held_in_ledger(self, range_s: float) -> bool:
        """Was the job's delivery kept back at submission, its ``run_at`` beyond what
        the delay queues carry (``range_s``)? See ``held_at_submission``."""
        return held_at_submission(self.submitted_at, self.run_at, range_s)

    def hand_over(self, range_s: float, origin: Origin, now: datetime | None = None) -> bool:
        """Hand a job held in the ledger to the delay queues once its ``run_at`` is
        within ``range_s``; False when there is nothing to hand over (not held, done
        already, not scheduled any more, or not yet within range)."""
        if self.status is not Status.SCHEDULED or self.handed_over or self.run_at is None:
            return False
        if not self.held_in_ledger(range_s):
            return False
        if self.run_at - (now or self.Event.create_timestamp()) > timedelta(seconds=range_s):
            return False
        self._record(self.HandedOver, origin, run_at=self.run_at, priority=self.priority)
        return True

    def retry(self, origin: Origin) -> None:
        if self.status not in (Status.FAILED, Status.CANCELLED):
            raise InvalidTransition(self.status, "retry")
        self._record(self.RetryRequested, origin)

    def _require(self, status: Status, *, command: str, attempt: int | None = None) -> None:
        """Check the state; a worker's command also names the attempt it is about,
        so an attempt that was given up on cannot record over its successor."""
        if self.status is not status:
            raise InvalidTransition(self.status, command)
        if attempt is not None and attempt != self.attempt:
            raise StaleDelivery(self.status, f"{command} attempt {attempt} of")

    def _record(self, event_class: type[Job.Event], origin: Origin, **fields: Any) -> None:
        fields.setdefault("attempt", self.attempt)
        self.trigger_event(
            event_class,
            tenant=self.tenant,
            case_id=self.case_id,
            job_type=self.job_type,
            pool=self.pool,
            actor=storable.text(origin.actor),
            correlation_id=storable.text(origin.correlation_id) or self.correlation_id,
            traceparent=origin.traceparent,
            **fields,
        )


def held_at_submission(submitted_at: datetime, run_at: datetime | None, range_s: float) -> bool:
    """The one rule of which delayed jobs the ledger keeps back: those whose ``run_at``
    was more than ``range_s`` (what the delay queues carry) after their submission.
    The outbox sends the others' delivery at submission; these are handed over
    (``Job.hand_over``) when they come within range. Both read the same two times,
    so every job is sent by exactly one of the two."""
    return run_at is not None and run_at - submitted_at > timedelta(seconds=range_s)


def status_after(event: object) -> Status:
    """The status a job is in after ``event``: the one rule the aggregate, the job
    view and the live streams all fold a history with. The events that leave the
    status as it was can only happen to a running job, so they say ``running``; an
    ``AttemptFailed`` without a retry is followed by ``Failed`` or ``Cancelled`` in
    the same commit."""
    match event:
        case Job.Submitted(run_at=datetime()) | Job.HandedOver():
            return Status.SCHEDULED
        case Job.Submitted() | Job.RetryRequested():
            return Status.QUEUED
        case Job.Succeeded():
            return Status.SUCCEEDED
        case Job.Failed():
            return Status.FAILED
        case Job.Cancelled():
            return Status.CANCELLED
        case Job.AttemptInterrupted():
            return Status.RETRY_SCHEDULED
        case Job.AttemptFailed(retry_at=retry_at) if retry_at is not None:
            return Status.RETRY_SCHEDULED
        case Job.Started() | Job.ProgressReported() | Job.AttemptFailed() | Job.CancelRequested():
            return Status.RUNNING
    raise TypeError(f"not an event of a job: {type(event).__name__}")
