"""Delayed jobs, in memory: the scheduled status, the outbox's sends, the hand-over of
delays beyond the delay queues, a worker given a copy early, and the horizon."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Tracking
from pydantic import BaseModel

from application.attempts import Attempts, Defer, Run, Wait
from application.delivery import Delivery
from application.handover import HandOver
from application.outbox import Send, messages_for
from application.store import Store
from application.submissions import BatchRefused, BeyondHorizon, Submission, Submissions
from client import StatusEvent
from consumers.context import JobContext
from consumers.registry import JobRegistry, Limits
from domain.errors import InvalidTransition, NotDueYet
from domain.job import Job, Status, status_after
from domain.ledger import JobLedger
from domain.origin import Origin
from domain.retry import RetryPolicy
from infra.watch import describe
from projections.memory import MemoryJobView
from projections.projection import JobProjection

USER = Origin("alice", "corr-1")
WORKER = Origin("w1")
RANGE_S = 63  # six delay levels

registry = JobRegistry()


class Params(BaseModel):
    n: int = 0


@registry.job("echo")
async def echo(ctx: JobContext, params: Params) -> None:
    pass


@registry.job("solo", limits=Limits(max_running=1))
async def solo(ctx: JobContext, params: Params) -> None:
    pass


def now() -> datetime:
    return datetime.now(UTC)


def scheduled(in_s: float, job_type: str = "echo") -> Job:
    return Job.submit(
        job_id=uuid4(),
        tenant="t1",
        case_id="c1",
        job_type=job_type,
        params={"n": 1},
        pool="default",
        max_attempts=3,
        origin=USER,
        run_at=now() + timedelta(seconds=in_s),
    )


# -- the state machine ------------------------------------------------------------------


def test_a_job_with_a_future_run_at_is_scheduled_and_its_submission_says_when() -> None:
    job = scheduled(3600)
    [submitted] = job.collect_events()
    assert job.status is Status.SCHEDULED
    assert isinstance(submitted, Job.Submitted) and submitted.run_at == job.run_at
    assert status_after(submitted) is Status.SCHEDULED


def test_a_run_at_in_the_past_runs_now() -> None:
    job = scheduled(-5)
    assert job.status is Status.QUEUED and job.run_at is None


def test_a_scheduled_job_does_not_start_before_its_run_at_and_records_nothing() -> None:
    job = scheduled(3600)
    job.collect_events()
    with pytest.raises(NotDueYet) as early:
        job.start(1, "w1", WORKER)
    assert 3590 < early.value.wait_s <= 3600
    assert job.status is Status.SCHEDULED and job.collect_events() == []


def test_a_scheduled_job_starts_no_earlier_than_its_run_at() -> None:
    job = scheduled(0.05)
    job.collect_events()
    while job.due_in_s() > 0:
        asyncio.run(asyncio.sleep(job.due_in_s()))
    job.start(1, "w1", WORKER)
    [started] = job.collect_events()
    assert job.run_at is not None and started.timestamp >= job.run_at
    assert job.status is Status.RUNNING


def test_a_scheduled_job_is_cancelled_at_once_and_can_no_longer_start() -> None:
    job = scheduled(3600)
    job.cancel(USER)
    assert job.status is Status.CANCELLED
    with pytest.raises(InvalidTransition):
        job.start(1, "w1", WORKER)


def test_a_submission_recorded_before_jobs_could_be_delayed_loads_with_no_run_at() -> None:
    state: dict[str, Any] = {"params": {}, "max_attempts": 3}
    Job.Submitted.upcast_v1_v2(state)
    assert state["run_at"] is None and state["priority"] == "normal"


def test_only_a_job_held_at_submission_is_handed_over_and_only_once_within_range() -> None:
    held, near = scheduled(RANGE_S + 30), scheduled(RANGE_S - 10)
    assert held.held_in_ledger(RANGE_S) and not near.held_in_ledger(RANGE_S)

    assert not held.hand_over(RANGE_S, USER)  # not yet within range
    assert not near.hand_over(RANGE_S, USER)  # sent at submission
    later = now() + timedelta(seconds=31)
    assert held.hand_over(RANGE_S, USER, later)
    assert not held.hand_over(RANGE_S, USER, later)
    assert held.status is Status.SCHEDULED and held.handed_over
    assert isinstance(held.collect_events()[-1], Job.HandedOver)


# -- the outbox -------------------------------------------------------------------------


def test_a_job_scheduled_within_range_is_sent_at_submission_rounded_down() -> None:
    job = scheduled(10.7)
    [message] = messages_for(job.collect_events()[-1], now(), range_s=RANGE_S)
    assert isinstance(message, Send) and message.delay_s in (9.0, 10.0)


def test_a_job_scheduled_beyond_range_is_kept_in_the_ledger_until_handed_over() -> None:
    job = scheduled(RANGE_S + 30)
    assert messages_for(job.collect_events()[-1], now(), range_s=RANGE_S) == []

    at = now() + timedelta(seconds=40)
    assert job.hand_over(RANGE_S, USER, at)
    [message] = messages_for(job.collect_events()[-1], at, range_s=RANGE_S)
    assert isinstance(message, Send) and message.delivery.attempt == 1
    assert RANGE_S - 12 <= message.delay_s <= RANGE_S - 10


def test_a_hand_over_after_run_at_has_passed_is_sent_at_once() -> None:
    job = scheduled(RANGE_S + 30)
    job.hand_over(RANGE_S, USER, now() + timedelta(seconds=RANGE_S + 60))
    late = now() + timedelta(seconds=RANGE_S + 60)
    [message] = messages_for(job.collect_events()[-1], late, range_s=RANGE_S)
    assert isinstance(message, Send) and message.delay_s == 0


# -- the hand-over pass -------------------------------------------------------------------


class Ledgered:
    """The ledger in memory, and the job view the projection builds from it."""

    def __init__(self) -> None:
        self.ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.view = MemoryJobView()
        self.projection = JobProjection()
        self.position = 0
        self.clock = now()

    def project(self) -> None:
        while items := self.ledger.notification_log.select(self.position + 1, 10):
            for item in items:
                event = self.ledger.mapper.to_domain_event(item)
                changes = list(self.projection.changes(event, item.id))
                self.view.apply(changes, Tracking(self.ledger.name, item.id))
                self.position = item.id

    def submit(self, in_s: float) -> UUID:
        job_id = uuid4()
        self.ledger.submit_job(
            job_id=job_id,
            tenant="t1",
            case_id="c1",
            job_type="echo",
            params={},
            pool="default",
            max_attempts=3,
            origin=USER,
            run_at=now() + timedelta(seconds=in_s),
        )
        return job_id

    def pass_(self) -> int:
        handed = HandOver(
            ledger=self.ledger,
            held=self.view,
            range_s=RANGE_S,
            interval_s=1,
            clock=lambda: self.clock,
        ).pass_once()
        self.project()
        return handed

    def history(self, job_id: UUID) -> list[str]:
        return [type(e).__name__ for e in self.ledger.job_history(job_id)]


def test_the_pass_hands_over_held_jobs_as_they_come_within_range_once_each() -> None:
    w = Ledgered()
    soon, later, near = w.submit(RANGE_S + 20), w.submit(RANGE_S + 500), w.submit(5)
    cancelled = w.submit(RANGE_S + 20)
    w.ledger.cancel_job(cancelled, USER)
    w.project()

    assert w.pass_() == 0
    w.clock += timedelta(seconds=30)
    assert w.pass_() == 1
    assert w.pass_() == 0  # handed over already: the view no longer proposes it
    assert w.history(soon) == ["Submitted", "HandedOver"]
    assert w.history(later) == w.history(near) == ["Submitted"]
    assert w.history(cancelled) == ["Submitted", "Cancelled"]
    row = w.view.get(soon)
    assert row is not None and row.status == "scheduled" and row.handed_over


def test_the_ledger_refuses_what_a_lagging_view_proposes_again() -> None:
    w = Ledgered()
    job_id = w.submit(RANGE_S + 20)
    w.project()
    w.clock += timedelta(seconds=30)
    w.ledger.hand_over_job(job_id, RANGE_S, USER, w.clock)  # another dispatcher did
    assert w.pass_() == 0  # the view has not seen it yet; the ledger has
    assert w.history(job_id) == ["Submitted", "HandedOver"]


def test_a_pass_after_a_long_outage_hands_over_jobs_whose_time_has_passed() -> None:
    w = Ledgered()
    job_id = w.submit(RANGE_S + 20)
    w.project()
    w.clock += timedelta(days=1)
    assert w.pass_() == 1
    assert w.history(job_id) == ["Submitted", "HandedOver"]


async def test_passes_come_at_most_half_the_range_apart_whatever_the_interval_set() -> None:
    """A job that comes within range just after a pass must be handed over before its
    run_at: with two delay levels (3 s) and passes 60 s apart, it would start up to
    57 s late. Half the range apart, it is handed over with at least half to wait."""
    w = Ledgered()
    job_id = w.submit(3 + 1)  # beyond a 3 s range: held
    w.project()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        w.clock += timedelta(seconds=seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    passes = HandOver(
        ledger=w.ledger, held=w.view, range_s=3, interval_s=60, clock=lambda: w.clock, sleep=sleep
    )
    with pytest.raises(asyncio.CancelledError):
        await passes.run()
    assert slept == [1.5, 1.5, 1.5]
    assert w.history(job_id) == ["Submitted", "HandedOver"]
    long_range = HandOver(ledger=w.ledger, held=w.view, range_s=65535, interval_s=60)
    assert long_range.interval_s == 60


# -- a worker given a copy before run_at ------------------------------------------------------


class Nobody:
    def beat(self, *args: Any) -> None: ...

    def forget(self, worker_id: str) -> None: ...

    def holds(self, *args: Any) -> bool:
        return False

    def acquire(self, *args: Any) -> float:
        return 0.0

    def release(self, *args: Any) -> None: ...


def worker(ledger: JobLedger, slept: list[float]) -> Attempts:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    return Attempts(
        ledger=ledger,
        job_kinds=registry,
        liveness=Nobody(),
        limiter=Nobody(),
        retry_policy=RetryPolicy(max_attempts=3),
        worker_id="w1",
        pool="default",
        store=Store(first_backoff_s=0.001),
        sleep=sleep,
    )


def submit_to(ledger: JobLedger, in_s: float, job_type: str = "echo") -> Delivery:
    job = scheduled(in_s, job_type)
    ledger.append_submitted(job)
    return Delivery(job.id, 1, job_type, "t1", "c1", "default", "corr-1")


@pytest.mark.parametrize("job_type", ["echo", "solo"])
async def test_a_copy_that_comes_far_too_early_is_sent_round_again_and_nothing_starts(
    job_type: str,
) -> None:
    ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    delivery = submit_to(ledger, 600, job_type)
    decision = await worker(ledger, []).begin(delivery)
    assert isinstance(decision, Defer) and 590 < decision.wait_s <= 600
    assert ledger.read_job(delivery.job_id).status is Status.SCHEDULED


async def test_a_copy_that_comes_less_than_a_second_early_waits_for_run_at_then_starts() -> None:
    ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    delivery = submit_to(ledger, 0.3)
    attempts = worker(ledger, [])
    decision = await attempts.begin(delivery)
    assert isinstance(decision, Wait) and 0 < decision.wait_s <= 0.3
    assert ledger.read_job(delivery.job_id).status is Status.SCHEDULED
    await asyncio.sleep(decision.wait_s)  # as the worker does, outside its slots
    assert isinstance(await attempts.begin(delivery), Run)
    job = ledger.read_job(delivery.job_id)
    [_, started] = ledger.job_history(job.id)
    assert job.run_at is not None and started.timestamp >= job.run_at


# -- submitting -----------------------------------------------------------------------------


@pytest.fixture
def submissions() -> Submissions:
    ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return Submissions(ledger, registry, default_max_attempts=3, horizon_s=86400)


def test_a_run_at_beyond_the_horizon_is_refused_with_the_reason(submissions: Submissions) -> None:
    with pytest.raises(BeyondHorizon, match="horizon"):
        submissions.submit(
            job_id=uuid4(),
            tenant="t1",
            case_id="c1",
            job_type="echo",
            params={},
            origin=USER,
            run_at=now() + timedelta(days=2),
        )


def test_a_batch_with_one_job_beyond_the_horizon_is_refused_whole(
    submissions: Submissions,
) -> None:
    items = [
        Submission("echo", "c1", {}, run_at=now() + timedelta(hours=1)),
        Submission("echo", "c1", {}, run_at=now() + timedelta(days=2)),
    ]
    with pytest.raises(BatchRefused) as refused:
        submissions.submit_many(tenant="t1", submissions=items, origin=USER)
    assert [n for n, _ in refused.value.errors] == [1]

    [ok] = submissions.submit_many(tenant="t1", submissions=items[:1], origin=USER)
    assert ok.job.status is Status.SCHEDULED and ok.job.run_at == items[0].run_at


def test_watch_says_when_a_scheduled_job_will_start() -> None:
    def event(type_: str, **data: Any) -> StatusEvent:
        return StatusEvent(1, "j", "c", "echo", type_, "scheduled", 0, "alice", "", now(), data)

    at = "2026-12-24T08:00:00Z"
    assert describe(event("Submitted", run_at=at)).endswith(f"scheduled for {at}")
    assert describe(event("HandedOver", run_at=at)).endswith(f"to start at {at}")
    assert describe(event("Submitted", run_at=None)) == "submitted  by alice"
