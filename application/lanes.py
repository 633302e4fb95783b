"""Lanes: the order in which a pool's waiting deliveries are started.

RabbitMQ's quorum queues have no message priorities, so each pool has one queue per
lane, and a worker consumes them all and starts, whenever a slot frees, the message of
the highest lane it holds (``LanePicker``), with a bound on how often a waiting lower
lane can be passed over. Which lane a delivery goes to is decided by the dispatcher:
the job's priority, ``retry`` for a due retry or a re-drive, and ``bulk`` for a tenant
that already has more than its share waiting in the pool (``TenantShares``)."""

from __future__ import annotations

import bisect
from collections import Counter, deque
from enum import StrEnum
from typing import Generic, TypeVar
from uuid import UUID


class Lane(StrEnum):
    RETRY = "retry"  # due retries, recovered and interrupted attempts, re-drives
    HIGH = "high"
    NORMAL = "normal"  # the pool's original queue
    LOW = "low"
    BULK = "bulk"  # a tenant's deliveries beyond its share of the pool's waiting ones


LANES: tuple[Lane, ...] = tuple(Lane)  # served in this order
PRIORITY_LANES = frozenset({Lane.HIGH, Lane.NORMAL, Lane.LOW})
DEFAULT_STARVATION_BOUND = 8
DEFAULT_TENANT_SHARE = 16


def lane_of(priority: str) -> Lane:
    """The lane of a first delivery at ``priority`` (an unknown one is ``normal``)."""
    try:
        lane = Lane(priority)
    except ValueError:
        return Lane.NORMAL
    return lane if lane in PRIORITY_LANES else Lane.NORMAL


M = TypeVar("M")


class LanePicker(Generic[M]):
    """The messages a worker holds and has not started, by lane. ``pick`` takes the
    oldest message of the highest lane holding one, unless a lower lane holding one
    has been passed over ``starvation_bound`` times since it was last served: then
    that lane's (the one passed over most, the higher on a tie). So a message of a
    waiting lane starts within ``starvation_bound`` + len(LANES) picks, however busy
    the lanes above it are."""

    def __init__(self, starvation_bound: int = DEFAULT_STARVATION_BOUND) -> None:
        if starvation_bound < 1:
            raise ValueError("the starvation bound is at least one pick")
        self.starvation_bound = starvation_bound
        self.waiting: dict[Lane, deque[M]] = {lane: deque() for lane in LANES}
        self.passed_over: Counter[Lane] = Counter()

    def __len__(self) -> int:
        return sum(len(messages) for messages in self.waiting.values())

    def add(self, lane: Lane, message: M) -> None:
        self.waiting[lane].append(message)

    def pick(self) -> tuple[Lane, M]:
        """The next message to start (IndexError when none waits)."""
        held = [lane for lane in LANES if self.waiting[lane]]
        if not held:
            raise IndexError("no message waits")
        starved = [lane for lane in held if self.passed_over[lane] >= self.starvation_bound]
        lane = max(starved, key=lambda s: self.passed_over[s]) if starved else held[0]
        for other in held:
            if LANES.index(other) > LANES.index(lane):
                self.passed_over[other] += 1
        self.passed_over[lane] = 0
        return lane, self.waiting[lane].popleft()

    def take_all(self) -> list[M]:
        """Every message not started (a worker stopping gives them back)."""
        taken = [m for lane in LANES for m in self.waiting[lane]]
        for messages in self.waiting.values():
            messages.clear()
        self.passed_over.clear()
        return taken


class TenantShares:
    """Per (pool, tenant, priority lane), the first deliveries the dispatcher has sent
    whose attempt has not started (nor been cancelled) yet, as it follows the ledger,
    each from the time it is due: a delayed one counts once its delay is out. A
    delivery due when ``share`` of its tenant's in that pool's lane are due and
    waiting is sent to the ``bulk`` lane, served after every other lane (but for the
    starvation bound): another tenant's job of that priority goes ahead of its
    backlog, its own job of another priority keeps its lane, its jobs of now are not
    held behind its jobs of tomorrow, and the backlog still runs whenever nothing
    else waits. The counts are in memory: a dispatcher that restarts counts from
    zero, which changes only lanes, never what runs."""

    def __init__(self, share: int = DEFAULT_TENANT_SHARE) -> None:
        if share < 1:
            raise ValueError("a tenant's share is at least one delivery")
        self.share = share
        # the due times (seconds since the epoch) of the waiting ones, in order
        self.waiting: dict[tuple[str, str, Lane], list[float]] = {}
        self.sent: dict[UUID, tuple[tuple[str, str, Lane], float]] = {}

    def lane(self, job_id: UUID, pool: str, tenant: str, lane: Lane, *, due: float) -> Lane:
        """The lane of the first delivery of ``job_id`` meant for ``lane``, due at
        ``due`` (seconds since the epoch): ``bulk`` if more than the share of its
        tenant's are due by then."""
        if lane not in PRIORITY_LANES:
            return lane
        key = (pool, tenant, lane)
        if job_id not in self.sent:
            self.sent[job_id] = (key, due)
            dues = self.waiting.setdefault(key, [])
            bisect.insort(dues, due)
            if bisect.bisect_right(dues, due) > self.share:
                return Lane.BULK
        return lane

    def ended(self, job_id: UUID) -> None:
        """The job's attempt started, or it was cancelled: it no longer waits."""
        sent = self.sent.pop(job_id, None)
        if sent is not None:
            key, due = sent
            dues = self.waiting[key]
            del dues[bisect.bisect_left(dues, due)]
            if not dues:
                del self.waiting[key]
