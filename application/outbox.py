"""The ledger is the outbox: which messages an event calls for. The dispatcher
(consumers/dispatcher.py) publishes them with confirms and records how far it got."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from application.delivery import Delivery
from domain.job import Job, held_at_submission


@dataclass(frozen=True)
class Send:
    """Publish ``delivery`` to its pool after ``delay_s`` seconds (0: at once)."""

    delivery: Delivery
    delay_s: float = 0.0


@dataclass(frozen=True)
class BroadcastCancel:
    """Tell every worker that a running job was asked to stop (best effort: the
    request is in the ledger, where workers check it)."""

    job_id: UUID


Message = Send | BroadcastCancel

# The only events that call for a message; a follower may skip decoding the rest.
DISPATCHED = (
    Job.Submitted,
    Job.HandedOver,
    Job.RetryRequested,
    Job.AttemptFailed,
    Job.AttemptInterrupted,
    Job.CancelRequested,
)
DISPATCHED_TOPICS = frozenset(get_topic(cls) for cls in DISPATCHED)


def messages_for(event: Any, now: datetime, *, range_s: float) -> list[Message]:
    """What ``event`` calls for, as of ``now``; ``range_s``: the longest delay the delay
    queues carry. A job scheduled further ahead than that at its submission is kept
    in the ledger and sent when it is handed over (``Job.HandedOver``)."""
    match event:
        case Job.Submitted(run_at=datetime() as run_at):
            if held_at_submission(event.timestamp, run_at, range_s):
                return []
            return [Send(delivery_of(event, attempt=1), until(run_at, now))]
        case Job.HandedOver(run_at=run_at):
            return [Send(delivery_of(event, attempt=1), until(run_at, now))]
        case Job.Submitted():
            return [Send(delivery_of(event, attempt=1))]
        case Job.RetryRequested():
            return [Send(delivery_of(event, attempt=event.attempt + 1))]
        case (
            Job.AttemptFailed(retry_at=datetime() as retry_at)
            | Job.AttemptInterrupted(retry_at=retry_at)
        ):
            delay_s = max((retry_at - now).total_seconds(), 0.0)
            return [Send(delivery_of(event, attempt=event.attempt + 1), delay_s)]
        case Job.CancelRequested():
            return [BroadcastCancel(event.originator_id)]
    return []


def until(run_at: datetime, now: datetime) -> float:
    """The whole seconds from ``now`` to ``run_at``, rounded down: the delay queues
    carry whole seconds, and a copy that arrives less than a second early is held by
    the worker until ``run_at`` (application/attempts.py); rounded up, every start
    would be up to a second late."""
    return float(max(math.floor((run_at - now).total_seconds()), 0))


def delivery_of(event: Any, *, attempt: int) -> Delivery:
    """A new copy of the delivery of ``attempt`` of the event's job."""
    return Delivery(
        job_id=event.originator_id,
        attempt=attempt,
        job_type=event.job_type,
        tenant=event.tenant,
        case_id=event.case_id,
        pool=event.pool,
        correlation_id=event.correlation_id,
        traceparent=event.traceparent,
    )
