"""What the live streams carry: a ledger event as one Server-Sent Event, the feeds a
client can follow, and how the gateway reads a feed's past from the ledger.

Each SSE event's ``id`` is the event's ledger position (its notification id), so a
client that reconnects with ``Last-Event-ID`` is sent exactly what it missed. The
data is the job's id, case, type, status, attempt, correlation id and the event's
own fields, never the job's params."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel, Field

from domain.job import status_after
from gateway.schemas import ENVELOPE

# The SSE event name (``event:``) of each ledger event; the rest are "status".
KIND = {
    "ProgressReported": "progress",
    "AttemptFailed": "error",
    "Failed": "error",
    "Succeeded": "result",
}
TERMINAL_TYPES = frozenset({"Succeeded", "Failed", "Cancelled"})
HIDDEN = ENVELOPE | {"params"}


class StreamEventOut(BaseModel):
    """The data of one SSE event."""

    position: int = Field(description="The event's ledger position; also the SSE id.")
    job_id: UUID
    case_id: str
    job_type: str
    type: str = Field(description="The ledger event, e.g. ProgressReported or Succeeded.")
    status: str = Field(description="The job's status after this event.")
    attempt: int
    actor: str
    correlation_id: str
    at: datetime
    data: dict[str, Any] = Field(description="The event's own fields (never the params).")


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A ledger event, encoded once for every client that receives it."""

    position: int
    job_id: UUID
    tenant: str
    case_id: str
    terminal: bool
    frame: bytes


def to_stream_event(event: Any, position: int) -> StreamEvent:
    name = type(event).__name__
    fields = vars(event)
    status = status_after(event)
    out = StreamEventOut(
        position=position,
        job_id=event.originator_id,
        case_id=event.case_id,
        job_type=event.job_type,
        type=name,
        status=status.value,
        attempt=event.attempt,
        actor=event.actor,
        correlation_id=event.correlation_id,
        at=event.timestamp,
        data={k: v for k, v in fields.items() if k not in HIDDEN},
    )
    frame = f"id: {position}\nevent: {KIND.get(name, 'status')}\ndata: {out.model_dump_json()}\n\n"
    return StreamEvent(
        position=position,
        job_id=event.originator_id,
        tenant=event.tenant,
        case_id=event.case_id,
        terminal=name in TERMINAL_TYPES,
        frame=frame.encode(),
    )


@dataclass(frozen=True)
class Feed:
    """What one client follows: a job, a case, or a whole tenant; always one tenant."""

    tenant: str
    job_id: UUID | None = None
    case_id: str | None = None

    def accepts(self, tenant: str, case_id: str, job_id: UUID) -> bool:
        if tenant != self.tenant:
            return False
        if self.job_id is not None:
            return job_id == self.job_id
        return self.case_id is None or case_id == self.case_id


@dataclass(frozen=True)
class Page:
    """Events of a feed read from the ledger: ``(event, position)`` pairs in order,
    the position the read got to (the next page starts after it), and whether
    there may be more."""

    events: Sequence[tuple[Any, int]]
    scanned_to: int
    more: bool


class LedgerHistory(Protocol):
    """Reads a feed's events after a position straight from the ledger (blocking)."""

    def after(self, feed: Feed, position: int, limit: int) -> Page: ...

    def head(self) -> int:
        """The ledger's last position."""
        ...
