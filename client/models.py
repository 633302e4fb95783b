"""What the gateway answers, as typed values. Parsing keeps the fields the client
knows and ignores the rest, so a newer gateway does not break an older client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_EVENTS = frozenset({"Succeeded", "Failed", "Cancelled"})


def rfc3339(at: datetime | str) -> str:
    if isinstance(at, str):
        return at
    if at.tzinfo is None:
        raise ValueError("a time with its offset (an aware datetime), e.g. datetime.now(UTC)")
    return at.isoformat()


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Job:
    """A job's state, as ``GET /jobs/{id}`` answers it."""

    id: str
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
    run_at: datetime | None = None  # scheduled: not before then

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled (a retry may start it again)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        submitted_at = _time(data["submitted_at"])
        assert submitted_at is not None
        return cls(
            id=str(data["id"]),
            type=data["type"],
            case_id=data["case_id"],
            status=data["status"],
            progress=data.get("progress", 0),
            progress_message=data.get("progress_message", ""),
            attempt=data.get("attempt", 0),
            max_attempts=data.get("max_attempts", 0),
            priority=data.get("priority", "normal"),
            error=data.get("error"),
            result=data.get("result"),
            correlation_id=data.get("correlation_id", ""),
            cancel_requested=data.get("cancel_requested", False),
            submitted_by=data.get("submitted_by", ""),
            submitted_at=submitted_at,
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            retry_at=_time(data.get("retry_at")),
            run_at=_time(data.get("run_at")),
        )


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a job's history (``GET /jobs/{id}/events``), in order."""

    version: int
    type: str
    at: datetime
    attempt: int
    actor: str
    correlation_id: str
    traceparent: str
    data: dict[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryEvent:
        at = _time(data["at"])
        assert at is not None
        return cls(
            version=data["version"],
            type=data["type"],
            at=at,
            attempt=data.get("attempt", 0),
            actor=data.get("actor", ""),
            correlation_id=data.get("correlation_id", ""),
            traceparent=data.get("traceparent", ""),
            data=dict(data.get("data") or {}),
        )


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's live stream (``GET /jobs/{id}/progress``). ``position``
    is its ledger position (the SSE id); ``type`` the ledger event (``Started``,
    ``ProgressReported``, ``Succeeded``, …); ``status`` the job's status after it.
    ``handle.progress()`` yields the subclass of its kind: ``ProgressEvent``,
    ``ErrorEvent``, ``ResultEvent`` or ``StatusEvent``."""

    kind: ClassVar[str] = "status"

    position: int
    job_id: str
    case_id: str
    job_type: str
    type: str
    status: str
    attempt: int
    actor: str
    correlation_id: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """The job has ended here (a retry may start it again later)."""
        return self.type in TERMINAL_EVENTS

    @staticmethod
    def from_sse(kind: str, position: int, data: Mapping[str, Any]) -> StreamEvent:
        at = _time(data["at"])
        assert at is not None
        cls = _KINDS.get(kind, StatusEvent)
        return cls(
            position=position,
            job_id=str(data["job_id"]),
            case_id=data.get("case_id", ""),
            job_type=data.get("job_type", ""),
            type=data["type"],
            status=data["status"],
            attempt=data.get("attempt", 0),
            actor=data.get("actor", ""),
            correlation_id=data.get("correlation_id", ""),
            at=at,
            data=dict(data.get("data") or {}),
        )


@dataclass(frozen=True)
class StatusEvent(StreamEvent):
    """A change of state: submitted, started, cancel requested, cancelled, retried."""


@dataclass(frozen=True)
class ProgressEvent(StreamEvent):
    """The handler reported progress."""

    kind: ClassVar[str] = "progress"

    @property
    def percent(self) -> int:
        return int(self.data.get("percent", 0))

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))


@dataclass(frozen=True)
class ErrorEvent(StreamEvent):
    """An attempt failed (``AttemptFailed``, perhaps retried) or the job did
    (``Failed``)."""

    kind: ClassVar[str] = "error"

    @property
    def error(self) -> str:
        return str(self.data.get("error", ""))

    @property
    def traceback(self) -> str:
        return str(self.data.get("traceback", ""))


@dataclass(frozen=True)
class ResultEvent(StreamEvent):
    """The job succeeded."""

    kind: ClassVar[str] = "result"

    @property
    def result(self) -> dict[str, Any]:
        return dict(self.data.get("result") or {})


_KINDS: dict[str, type[StreamEvent]] = {
    c.kind: c for c in (StatusEvent, ProgressEvent, ErrorEvent, ResultEvent)
}


@dataclass(frozen=True)
class JobSpec:
    """One job to submit with ``submit_many``."""

    type: str
    case_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    run_at: datetime | str | None = None  # not before then (aware, or RFC 3339)
    delay_s: float | None = None  # or not before this many seconds from now
    priority: str | None = None  # high, normal or low; None: the job type's own

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "case_id": self.case_id,
            "params": dict(self.params),
        }
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        if self.run_at is not None:
            body["run_at"] = rfc3339(self.run_at)
        if self.delay_s is not None:
            body["delay_s"] = self.delay_s
        if self.priority is not None:
            body["priority"] = self.priority
        return body


@dataclass(frozen=True)
class Submitted:
    """What a submit answered: the job's id and, when it was a batch, its type, case
    and status. ``created`` is False when the idempotency key named an earlier job."""

    id: str
    type: str
    case_id: str
    status: str
    created: bool
    job: Job | None = None


@dataclass(frozen=True)
class Schedule:
    """A cron schedule (``/schedules``): a job of ``type`` on ``case_id`` at each tick
    of ``cron`` in ``zone``. ``history`` is read only by ``get_schedule``."""

    id: str
    name: str
    cron: str
    zone: str
    type: str
    case_id: str
    params: dict[str, Any]
    catch_up: str
    paused: bool
    created_by: str
    last_tick: datetime | None
    last_job_id: str | None
    next_tick: datetime | None
    history: list[HistoryEvent] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        return cls(
            id=str(data["id"]),
            name=data["name"],
            cron=data["cron"],
            zone=data["zone"],
            type=data["type"],
            case_id=data["case_id"],
            params=dict(data.get("params") or {}),
            catch_up=data["catch_up"],
            paused=data["paused"],
            created_by=data.get("created_by", ""),
            last_tick=_time(data.get("last_tick")),
            last_job_id=None if data.get("last_job_id") is None else str(data["last_job_id"]),
            next_tick=_time(data.get("next_tick")),
            history=[HistoryEvent.from_json(e) for e in data.get("history", [])],
        )
