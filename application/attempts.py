"""An attempt, from the delivery that asks for it to the fate of that delivery.

``begin(delivery)`` decides what a delivery calls for, from what the ledger holds:

    Run         the attempt's start is recorded: run the handler, then ``finish``
    Defer       a limit of the job type, or a scheduled job's run_at, says wait:
                send the delivery round again
    Wait        a scheduled job's copy came a moment before its run_at: keep it
                until then (outside the worker's slots), and begin again
    Hold        the attempt runs elsewhere: ``wait_out`` its end, then settle
    Ack         nothing (more) to do with this copy: stale, a duplicate, a re-drive done
    Reject      this copy started an attempt that failed the job: into the DLQ
    DeadLetter  no job in the ledger answers to it: into the DLQ with the reason

``finish(run, outcome)`` records how the attempt ended and says Ack or Reject.
The adapter (consumers/worker.py) turns decisions into acks, rejects and publishes
and decides nothing itself.

Every copy of a delivery carries its own ``delivery_id``; the copy whose id the
attempt's ``Started`` records is the attempt's own. When the job fails, that copy,
and only that one, is rejected into the DLQ, whichever worker holds it and however
often the broker hands it back: a reject lost with a connection is made again by
whoever receives the copy next, from the ledger, so every failed job is in the DLQ
once. A write whose outcome is unknown (a reply lost at COMMIT) is never guessed
at: when its retry is refused, the job is read back and the decision taken from
what it holds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from application.delivery import Delivery
from application.outcomes import Outcome
from application.ports import JobKind, JobKinds, Ledger, Limiter, Liveness
from application.store import Store
from domain.errors import (
    InvalidParams,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    NotDueYet,
    UnknownJobType,
)
from domain.job import STARTABLE, Job, Status
from domain.ledger import Committed
from domain.origin import Origin
from domain.retry import RetryPolicy

log = logging.getLogger("jobledger.worker")
OPERATOR = "operator"
RAN_REMEMBERED = 10_000


@dataclass(frozen=True)
class Run:
    """The attempt is this worker's: run ``kind``'s handler on ``params``."""

    delivery: Delivery
    job: Job
    kind: JobKind
    params: Any
    origin: Origin


@dataclass(frozen=True)
class Defer:
    wait_s: float


@dataclass(frozen=True)
class Wait:
    """A scheduled job's copy came a moment (less than ``hold_early_s``) before its
    ``run_at``: keep it ``wait_s``, without taking a slot, then begin again."""

    wait_s: float


@dataclass(frozen=True)
class Hold:
    """The attempt is running on another worker (or in another task of this one)."""

    job: Job = field(compare=False)


@dataclass(frozen=True)
class Ack:
    why: str
    job: Job | None = field(default=None, compare=False)  # as this decision's write left it


@dataclass(frozen=True)
class Reject:
    why: str
    job: Job | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DeadLetter:
    reason: str


Settle = Ack | Reject
Decision = Run | Defer | Wait | Hold | Ack | Reject | DeadLetter


class Attempts:
    def __init__(
        self,
        *,
        ledger: Ledger,
        job_kinds: JobKinds,
        liveness: Liveness,
        limiter: Limiter,
        retry_policy: RetryPolicy,
        worker_id: str,
        pool: str,
        store: Store | None = None,
        hold_poll_s: float = 1.0,
        dead_for_s: float = 3.0,
        hold_early_s: float = 1.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.job_kinds = job_kinds
        self.liveness = liveness
        self.limiter = limiter
        self.retry_policy = retry_policy
        self.worker_id = worker_id
        self.pool = pool
        self.store = store or Store()
        self.hold_poll_s = hold_poll_s
        # How long a holder must look dead before its attempt is recorded lost: longer
        # than a heartbeat interval, so a live worker whose beats paused (its database
        # restarting, say) beats again before it is taken for dead.
        self.dead_for_s = dead_for_s
        # A scheduled job's copy this early is held until its run_at, not sent round.
        self.hold_early_s = hold_early_s
        self.sleep = sleep
        self.clock = clock
        # The jobs this worker holds: counted from before it records a start until
        # after it records the outcome, so a list of them is never missing one whose
        # Started it has written (see Liveness.holds).
        self.held: Counter[UUID] = Counter()
        # The attempts this process has run (the most recent): never run one twice.
        self.ran: dict[tuple[UUID, int], None] = {}

    # Starting

    async def begin(
        self, delivery: Delivery, *, redrive: bool = False, traceparent: str = ""
    ) -> Decision:
        """What ``delivery`` calls for. ``redrive``: the broker's own record says the
        message was dead-lettered from a work queue (an operator moved it back)."""
        origin = Origin(self.worker_id, delivery.correlation_id, traceparent)
        was_held = self.held[delivery.job_id] > 0
        self.held[delivery.job_id] += 1
        decision: Decision | None = None
        leased = False
        try:
            try:  # the common case, a start, in one go
                job, started = await self.store.run(self._read_and_start, delivery, origin)
            except JobNotFound:
                decision = DeadLetter("unknown job")
                return decision
            except NotDueYet as early:  # the outbox rounds delays down to whole seconds
                wait_s = early.wait_s
                decision = Wait(wait_s) if wait_s <= self.hold_early_s else Defer(wait_s)
                return decision
            kind = self._limited(job.job_type)
            if (
                not started
                and kind is not None
                and _startable(job, delivery)
                and _matches(job, delivery)
            ):
                # A limited type: its lease, or the wait, before the start.
                wait_s = await self.store.call(
                    self.limiter.acquire, kind.name, job.id, self.worker_id, kind.limits
                )
                if wait_s > 0:
                    decision = Defer(wait_s)
                    return decision
                leased = bool(kind.limits.max_running)
                job, started = await self.store.run(self._start, job, delivery, origin)
            decision = await self._decide(job, delivery, origin, started, was_held, redrive)
            return decision
        finally:
            if not isinstance(decision, Run):
                self._let_go(delivery.job_id)
                if leased:
                    await self.store.call(self.limiter.release, delivery.job_id, self.worker_id)

    async def _read_and_start(self, delivery: Delivery, origin: Origin) -> tuple[Job, bool]:
        """(The job, whether this call started it): a startable job of a type without
        limits is started here; anything else is read as the store has it (a cached
        copy may lag) and left to the caller."""
        job = await self.ledger.get_job_async(delivery.job_id)
        if not _startable(job, delivery):
            job = await self.ledger.read_job_async(job.id)  # the cached copy may lag
            if not _startable(job, delivery):
                return job, False
        if not _matches(job, delivery):
            return job, False
        if (wait_s := job.due_in_s()) > 0:
            raise NotDueYet(job.run_at, wait_s)
        if self._limited(job.job_type) is not None:
            return job, False
        return await self._start(job, delivery, origin)

    async def _start(self, job: Job, delivery: Delivery, origin: Origin) -> tuple[Job, bool]:
        """Start ``job`` (a copy just read, decided on without reading it again)."""
        try:
            committed = await self.ledger.start_job_async(
                job.id,
                delivery.attempt,
                self.worker_id,
                origin,
                delivery.delivery_id,
                loaded=job,
            )
        except InvalidTransition:
            return await self.ledger.read_job_async(job.id), False
        return committed.job, True

    async def _decide(
        self,
        job: Job,
        delivery: Delivery,
        origin: Origin,
        started: bool,
        was_held: bool,
        redrive: bool,
    ) -> Decision:
        if not _matches(job, delivery):
            return DeadLetter("the message does not match its job in the ledger")
        if started or (not was_held and self._started_here(job, delivery)):
            return await self._run(job, delivery, origin)
        return await self._not_startable(job, delivery, origin, redrive=redrive)

    async def _run(self, job: Job, delivery: Delivery, origin: Origin) -> Decision:
        """The start is recorded: run it, unless the worker cannot run its type."""
        self.ran[(job.id, job.attempt)] = None
        while len(self.ran) > RAN_REMEMBERED:
            self.ran.pop(next(iter(self.ran)))
        try:
            kind = self.job_kinds.get(job.job_type)
            return Run(delivery, job, kind, kind.validate(job.params), origin)
        except (UnknownJobType, InvalidParams) as exc:
            # Recorded as the attempt's permanent failure: the copy goes to the DLQ.
            written = await self._write(
                job,
                self.ledger.fail_attempt_async,
                job.id,
                str(exc),
                retryable=False,
                retry_delay_s=None,
                origin=origin,
                attempt=job.attempt,
            )
            return self._settlement(written.job, delivery, "cannot run")

    def _started_here(self, job: Job, delivery: Delivery) -> bool:
        """Did this very call record the start? (Its commit's reply was lost, and the
        retry was refused because the first write had landed.) Never an attempt this
        process has already run."""
        return (
            job.status is Status.RUNNING
            and job.worker_id == self.worker_id
            and job.started_by(delivery.attempt, delivery.delivery_id)
            and (job.id, job.attempt) not in self.ran
        )

    async def _not_startable(
        self, job: Job, delivery: Delivery, origin: Origin, *, redrive: bool
    ) -> Decision:
        own_copy = job.started_by(delivery.attempt, delivery.delivery_id)
        if redrive and own_copy and job.status in (Status.FAILED, Status.CANCELLED):
            return await self._redrive(job, origin)
        if job.status is Status.RUNNING and job.attempt == delivery.attempt:
            return Hold(job)
        return self._settlement(job, delivery, "stale")

    async def _redrive(self, job: Job, origin: Origin) -> Decision:
        """An operator moved the attempt's own copy back from the DLQ: run the job again."""
        operator = Origin(OPERATOR, origin.correlation_id, origin.traceparent)
        attempt = job.attempt
        try:
            committed = await self.store.run(self.ledger.retry_job_async, job.id, operator)
        except InvalidTransition:
            job = await self.store.run(self.ledger.read_job_async, job.id)
            if job.status is Status.QUEUED and job.attempt == attempt:
                return Ack("redriven", job)  # our own write, whose reply was lost
            return Ack("stale")
        log.info("job %s re-driven from the DLQ by an operator", job.id)
        return Ack("redriven", committed.job)

    # Waiting out an attempt that runs elsewhere

    async def wait_out(self, delivery: Delivery, hold: Hold) -> Settle:
        """Wait while a live worker holds the attempt; record it lost when none does.
        Then settle this copy as the ledger says."""
        job, lost, dead_since = hold.job, False, None
        while True:
            job = await self.store.run(self.ledger.read_job_async, job.id)
            if job.status is not Status.RUNNING or job.attempt != delivery.attempt:
                break
            if await self._held_alive(job):
                dead_since = None
            elif dead_since is None:
                dead_since = self.clock()
            elif self.clock() - dead_since >= self.dead_for_s:
                lost = await self._record_lost(job) or lost
                continue
            await self.sleep(self.hold_poll_s)
        return self._settlement(job, delivery, "lost" if lost else "ended elsewhere")

    async def _held_alive(self, job: Job) -> bool:
        if job.worker_id == self.worker_id:
            return self.held[job.id] > 0
        assert job.started_at is not None
        return await self.store.call(self.liveness.holds, job.worker_id, job.id, job.started_at)

    async def _record_lost(self, job: Job) -> bool:
        """Record the attempt lost; False if the ledger refused (it ended meanwhile)."""
        error = f"attempt {job.attempt} was lost: worker {job.worker_id} stopped"
        log.warning("job %s: %s", job.id, error)
        written = await self._write(
            job,
            self.ledger.fail_attempt_async,
            job.id,
            error,
            retryable=True,
            retry_delay_s=self._policy(job).decide(job.attempt, retryable=True),
            origin=Origin(self.worker_id, job.correlation_id),
            attempt=job.attempt,
        )
        return written.recorded

    # Finishing

    async def finish(self, run: Run, outcome: Outcome) -> Settle:
        """Record how the attempt ended; then Ack, or Reject when this copy started an
        attempt that failed the job."""
        job, origin, n = run.job, run.origin, run.job.attempt
        try:
            if outcome.interrupted:
                written = await self._interrupt(job, origin, "worker shut down")
            elif outcome.cancelled:
                written = await self._write(
                    job, self.ledger.confirm_cancelled_async, job.id, origin, attempt=n
                )
                if written.job.status is Status.RUNNING and written.job.attempt == n:
                    # Stopped without a cancel in the ledger: the attempt does not count.
                    written = await self._interrupt(job, origin, "stopped without a cancel")
            elif outcome.error is not None:
                delay_s = self._policy(job).decide(
                    n, retryable=outcome.retryable, requested_delay_s=outcome.retry_delay_s
                )
                written = await self._write(
                    job,
                    self.ledger.fail_attempt_async,
                    job.id,
                    outcome.error,
                    retryable=outcome.retryable,
                    retry_delay_s=delay_s,
                    origin=origin,
                    attempt=n,
                    traceback=outcome.traceback or "",
                )
            else:
                written = await self._write(
                    job,
                    self.ledger.complete_job_async,
                    job.id,
                    outcome.result or {},
                    origin,
                    attempt=n,
                )
        finally:
            self._let_go(job.id)
            if run.kind.limits.max_running:
                await self.store.call(self.limiter.release, job.id, self.worker_id)
        settled = self._settlement(written.job, run.delivery, written.job.status.value)
        return settled if written.recorded else type(settled)(settled.why)

    async def _interrupt(self, job: Job, origin: Origin, reason: str) -> _Written:
        return await self._write(
            job,
            self.ledger.interrupt_attempt_async,
            job.id,
            reason,
            attempt=job.attempt,
            origin=origin,
        )

    async def _write(
        self, job: Job, command: Callable[..., Awaitable[Committed]], *args: Any, **kwargs: Any
    ) -> _Written:
        """Write; when the state machine refuses (the attempt was given up on, or an
        earlier try of this very write landed though its reply was lost), read the
        job back: the ledger says what happened."""
        try:
            committed = await self.store.run(command, *args, **kwargs)
        except InvalidTransition as exc:
            log.info("job %s: not recorded (%s); reading it back", job.id, exc)
            return _Written(
                await self.store.run(self.ledger.read_job_async, job.id), recorded=False
            )
        return _Written(committed.job, recorded=True)

    def _settlement(self, job: Job, delivery: Delivery, why: str) -> Settle:
        """The fate of a copy once its attempt has ended, from the ledger alone."""
        if job.status is Status.FAILED and job.started_by(delivery.attempt, delivery.delivery_id):
            return Reject("failed", job)
        return Ack(why, job)

    # While running

    async def report(self, run: Run, percent: int, message: str) -> bool:
        """Record progress; True when the ledger says a cancel was requested."""
        try:
            committed = await self.store.run(
                self.ledger.report_progress_async,
                run.job.id,
                percent,
                message,
                run.origin,
                attempt=run.job.attempt,
            )
        except LedgerError as exc:
            log.info("progress not recorded: %s", exc)
            return False
        return committed.job.cancel_requested

    async def cancel_requested(self, job_id: UUID) -> bool:
        """Does the ledger ask for a job this worker runs to stop? (A broadcast says
        so too, but anyone can publish one.)"""
        if self.held[job_id] <= 0:
            return False
        job = await self.store.run(self.ledger.read_job_async, job_id)
        return job.status is Status.RUNNING and job.cancel_requested

    def in_flight(self) -> list[UUID]:
        return [job_id for job_id, n in self.held.items() if n > 0]

    async def beat(self) -> list[UUID]:
        """Say this worker lives and what it holds; return the held jobs whose cancel
        the ledger asks for (a broadcast may have been missed)."""
        listed_at = datetime.now(UTC)
        held = self.in_flight()
        await asyncio.to_thread(
            self.liveness.beat, self.worker_id, self.pool, [str(j) for j in held], listed_at
        )
        return [job_id for job_id in held if await self.cancel_requested(job_id)]

    async def stop(self) -> None:
        await asyncio.to_thread(self.liveness.forget, self.worker_id)

    # Helpers

    def _let_go(self, job_id: UUID) -> None:
        self.held[job_id] -= 1
        if self.held[job_id] <= 0:
            del self.held[job_id]

    def _limited(self, name: str) -> JobKind | None:
        """The job type, if it has limits shared by the pool."""
        kind = self._kind(name)
        if kind is not None and (kind.limits.per_second or kind.limits.max_running):
            return kind
        return None

    def _kind(self, name: str) -> JobKind | None:
        try:
            return self.job_kinds.get(name)
        except UnknownJobType:
            return None

    def _policy(self, job: Job) -> RetryPolicy:
        kind = self._kind(job.job_type)
        return kind.retry if kind is not None and kind.retry is not None else self.retry_policy


@dataclass(frozen=True)
class _Written:
    job: Job
    recorded: bool  # False: refused, and ``job`` is what the ledger holds instead


def _startable(job: Job, delivery: Delivery) -> bool:
    return job.status in STARTABLE and delivery.attempt == job.attempt + 1


def _matches(job: Job, delivery: Delivery) -> bool:
    """Does the message say of the job what the ledger says?"""
    return (job.tenant, job.job_type, job.pool) == (
        delivery.tenant,
        delivery.job_type,
        delivery.pool,
    )
