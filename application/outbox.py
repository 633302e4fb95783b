"""The ledger is the outbox: which messages an event calls for. The dispatcher
(consumers/dispatcher.py) publishes them with confirms and records how far it got."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from application.delivery import Delivery
from application.lanes import Lane, TenantShares, lane_of
from domain.job import Job, held_at_submission


@dataclass(frozen=True)
class Send:
    """Publish ``delivery`` to its pool's ``lane`` after ``delay_s`` seconds (0: at
    once)."""

    delivery: Delivery
    delay_s: float = 0.0
    lane: Lane = Lane.NORMAL


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
# The events that end a delivery's wait, which the tenants' shares follow.
WAIT_ENDED = (Job.Started, Job.Cancelled)
FOLLOWED_TOPICS = DISPATCHED_TOPICS | frozenset(get_topic(cls) for cls in WAIT_ENDED)


def messages_for(event: Any, now: datetime, *, range_s: float) -> list[Message]:
    """What ``event`` calls for, as of ``now``; ``range_s``: the longest delay the delay
    queues carry. A job scheduled further ahead than that at its submission is kept
    in the ledger and sent when it is handed over (``Job.HandedOver``). A first
    delivery (at submission or handed over) goes to the lane of the job's priority; a
    due retry, a recovered or interrupted attempt and a re-drive to the retry lane,
    served first."""
    match event:
        case Job.Submitted(run_at=datetime() as run_at):
            if held_at_submission(event.timestamp, run_at, range_s):
                return []
            lane = lane_of(event.priority)
            return [Send(delivery_of(event, attempt=1), until(run_at, now), lane=lane)]
        case Job.HandedOver(run_at=run_at):
            lane = lane_of(event.priority)
            return [Send(delivery_of(event, attempt=1), until(run_at, now), lane=lane)]
        case Job.Submitted():
            return [Send(delivery_of(event, attempt=1), lane=lane_of(event.priority))]
        case Job.RetryRequested():
            return [Send(delivery_of(event, attempt=event.attempt + 1), lane=Lane.RETRY)]
        case (
            Job.AttemptFailed(retry_at=datetime() as retry_at)
            | Job.AttemptInterrupted(retry_at=retry_at)
        ):
            delay_s = max((retry_at - now).total_seconds(), 0.0)
            delivery = delivery_of(event, attempt=event.attempt + 1)
            return [Send(delivery, delay_s, lane=Lane.RETRY)]
        case Job.CancelRequested():
            return [BroadcastCancel(event.originator_id)]
    return []


def until(run_at: datetime, now: datetime) -> float:
    """The whole seconds from ``now`` to ``run_at``, rounded down: the delay queues
    carry whole seconds, and a copy that arrives less than a second early is held by
    the worker until ``run_at`` (application/attempts.py); rounded up, every start
    would be up to a second late."""
    return float(max(math.floor((run_at - now).total_seconds()), 0))


def messages_shared_fairly(
    event: Any, now: datetime, shares: TenantShares, *, range_s: float
) -> list[Message]:
    """``messages_for``, with each first delivery's lane as the tenants' shares say
    (a delayed one counted from when it is due); an event that ends a delivery's wait
    is counted. Events come in ledger order."""
    if isinstance(event, WAIT_ENDED):
        shares.ended(event.originator_id)
        return []
    return [
        replace(m, lane=_shared_lane(m, now.timestamp(), shares)) if isinstance(m, Send) else m
        for m in messages_for(event, now, range_s=range_s)
    ]


def _shared_lane(send: Send, now_s: float, shares: TenantShares) -> Lane:
    d = send.delivery
    return shares.lane(d.job_id, d.pool, d.tenant, send.lane, due=now_s + send.delay_s)


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
