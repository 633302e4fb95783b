"""The attempt use case, in memory: every decision it takes about a delivery, taken
from what the ledger holds. The ledger is the real one over in-memory persistence;
liveness and limits are fakes; a fault wrapper loses the reply of a commit that
landed (an ambiguous commit) or refuses to reach the store at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import OperationalError
from pydantic import BaseModel

from application.attempts import Ack, Attempts, DeadLetter, Defer, Hold, Reject, Run
from application.delivery import Delivery
from application.outcomes import Outcome
from application.store import Store
from consumers.context import JobContext
from consumers.registry import JobRegistry, Limits
from domain.job import Job, Status
from domain.ledger import JobLedger
from domain.origin import Origin
from domain.retry import RetryPolicy

ME, OTHER = "host:1:default", "host:2:default"
USER = Origin("alice", "corr-1")


class Params(BaseModel):
    n: int = 0


registry = JobRegistry()


@registry.job("echo", max_attempts=2)
async def echo(ctx: JobContext, params: Params) -> dict[str, int]:
    return {"n": params.n}


@registry.job("solo", limits=Limits(max_running=1))
async def solo(ctx: JobContext, params: Params) -> None:
    pass


@registry.job("metered", limits=Limits(per_second=1))
async def metered(ctx: JobContext, params: Params) -> None:
    pass


class Liveness:
    """Workers' heartbeats, as the workers table keeps them."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[bool, list[str], datetime]] = {}

    def beat(self, worker_id: str, pool: str, in_flight: list[str], listed_at: datetime) -> None:
        self.rows[worker_id] = (True, in_flight, listed_at)

    def forget(self, worker_id: str) -> None:
        self.rows.pop(worker_id, None)

    def die(self, worker_id: str) -> None:
        _, in_flight, listed_at = self.rows[worker_id]
        self.rows[worker_id] = (False, in_flight, listed_at)

    def holds(self, worker_id: str, job_id: UUID, started_at: datetime) -> bool:
        alive, in_flight, listed_at = self.rows.get(worker_id, (False, [], started_at))
        return alive and (str(job_id) in in_flight or listed_at < started_at)


class Limiter:
    def __init__(self, wait_s: float = 0.0) -> None:
        self.wait_s = wait_s
        self.leases: dict[UUID, str] = {}

    def acquire(self, job_type: str, job_id: UUID, worker_id: str, limits: Any) -> float:
        if self.wait_s:
            return self.wait_s
        if limits.max_running:
            self.leases[job_id] = worker_id
        return 0.0

    def release(self, job_id: UUID, worker_id: str) -> None:
        if self.leases.get(job_id) == worker_id:
            del self.leases[job_id]


class Faulty:
    """The ledger, with faults armed per command: ``lose_reply`` commits and then
    raises as a cut connection would; ``unreachable`` raises before reaching it."""

    def __init__(self, ledger: JobLedger) -> None:
        self.ledger = ledger
        self.lose_reply: set[str] = set()
        self.unreachable: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        command = getattr(self.ledger, name)
        fault = name.removesuffix("_async")  # faults are armed by the command's name

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.unreachable.get(fault, 0) > 0:
                self.unreachable[fault] -= 1
                raise OperationalError("connection refused")
            result = await command(*args, **kwargs)
            if fault in self.lose_reply:
                self.lose_reply.discard(fault)
                raise OperationalError("server closed the connection unexpectedly")
            return result

        return call


class World:
    """One ledger, the workers that share it, and their heartbeats."""

    def __init__(self) -> None:
        # As a worker's ledger is: saves through the group commit, reads through the
        # group read, both awaited on the loop.
        self.ledger = JobLedger(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.popo",
                "AGGREGATE_CACHE_MAXSIZE": "100",
                "AGGREGATE_CACHE_FASTFORWARD": "n",
                "GROUP_COMMIT": "y",
            }
        )
        events = self.ledger.events
        self.ledger.read_together(lambda ids: {i: list(events.get(i)) for i in ids})
        self.faulty = Faulty(self.ledger)
        self.liveness = Liveness()
        self.limiter = Limiter()
        self.slept: list[float] = []
        self.now = 0.0
        self.on_sleep: Callable[[], None] = lambda: None

    def worker(self, worker_id: str = ME) -> Attempts:
        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)
            self.now += seconds
            self.on_sleep()

        return Attempts(
            ledger=self.faulty,
            job_kinds=registry,
            liveness=self.liveness,
            limiter=self.limiter,
            retry_policy=RetryPolicy(max_attempts=3),
            worker_id=worker_id,
            pool="default",
            store=Store(first_backoff_s=0.001),
            sleep=sleep,
            clock=lambda: self.now,
        )

    def submit(self, job_type: str = "echo", params: dict[str, Any] | None = None) -> UUID:
        job_id = uuid4()
        self.ledger.submit_job(
            job_id=job_id,
            tenant="t1",
            case_id="c1",
            job_type=job_type,
            params=params if params is not None else {"n": 1},
            pool="default",
            max_attempts=registry.get(job_type).max_attempts or 3,
            origin=USER,
        )
        return job_id

    def delivery(self, job_id: UUID, attempt: int = 1) -> Delivery:
        job = self.ledger.get_job(job_id)
        return Delivery(job_id, attempt, job.job_type, job.tenant, job.case_id, job.pool, "corr-1")

    def job(self, job_id: UUID) -> Job:
        return self.ledger.read_job(job_id)

    def history(self, job_id: UUID) -> list[str]:
        return [type(e).__name__ for e in self.ledger.job_history(job_id)]


@pytest.fixture
def world() -> Iterator[World]:
    world = World()
    yield world
    world.ledger.close()  # its writer's and reader's threads


async def test_a_queued_job_is_started_and_its_copy_is_named_on_the_start(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    delivery = world.delivery(job_id)

    run = await me.begin(delivery)

    assert isinstance(run, Run)
    assert run.params == Params(n=1)
    job = world.job(job_id)
    assert (job.status, job.attempt, job.worker_id) == (Status.RUNNING, 1, ME)
    assert job.delivery_id == delivery.delivery_id
    assert me.in_flight() == [job_id]


async def test_a_success_is_recorded_then_acked_and_the_job_let_go(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)

    decision = await me.finish(run, Outcome(result={"n": 1}))

    assert decision == Ack("succeeded")
    assert decision.job is not None and decision.job.status is Status.SUCCEEDED
    assert me.in_flight() == []


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(*args, **kwargs)


async def test_an_attempt_awaits_the_ledger_without_a_thread_of_its_own(world: World) -> None:
    """The start, the read before it and the outcome go straight to the group read and
    the group commit: no hop through the loop's executor in between (two of them a job
    cost a worker a third of its CPU)."""
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    job_id = world.submit()
    me = world.worker()

    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)
    assert await me.finish(run, Outcome(result={"n": 1})) == Ack("succeeded")

    assert executor.submitted == 0
    assert world.history(job_id) == ["Submitted", "Started", "Succeeded"]


async def test_a_start_given_up_while_written_leaves_no_stale_copy_behind(world: World) -> None:
    """A caller on the loop that stops waiting for its write (a worker stopping) does not
    know whether it landed: the job's cached copy is dropped, and the next read is the
    store's."""
    job_id = world.submit()
    ledger = world.ledger
    await ledger.get_job_async(job_id)  # cached, as queued
    assert ledger.writer is not None
    saved = ledger.writer.saved

    start = asyncio.create_task(ledger.start_job_async(job_id, 1, ME, USER))
    await asyncio.sleep(0)  # handed to the writer
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    for _ in range(500):  # the write itself goes on
        if ledger.writer.saved > saved:
            break
        await asyncio.sleep(0.01)

    job = await ledger.get_job_async(job_id)
    assert (job.status, job.attempt, job.worker_id) == (Status.RUNNING, 1, ME)


async def test_a_failure_with_attempts_left_is_acked_and_its_retry_scheduled(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)

    decision = await me.finish(run, Outcome(error="RuntimeError: flaky", retryable=True))

    assert decision == Ack("retry_scheduled")
    job = world.job(job_id)
    assert job.status is Status.RETRY_SCHEDULED and job.retry_at is not None


async def test_the_copy_that_started_a_job_that_fails_goes_to_the_dlq(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)

    decision = await me.finish(run, Outcome(error="PermanentError: no", retryable=False))

    assert decision == Reject("failed")
    assert world.history(job_id)[-2:] == ["AttemptFailed", "Failed"]


async def test_a_duplicate_copy_of_a_finished_attempt_is_acked(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    first = world.delivery(job_id)
    run = await me.begin(first)
    assert isinstance(run, Run)
    await me.finish(run, Outcome(error="PermanentError: no", retryable=False))

    duplicate = await me.begin(world.delivery(job_id))  # another copy of attempt 1

    assert duplicate == Ack("stale")


async def test_the_failed_attempts_own_copy_is_rejected_again_when_its_reject_was_lost(
    world: World,
) -> None:
    """A reject lost with the channel (a broker restart): the broker hands the copy
    back, and whoever gets it rejects it, from the ledger."""
    job_id = world.submit()
    me = world.worker()
    delivery = world.delivery(job_id)
    run = await me.begin(delivery)
    assert isinstance(run, Run)
    assert await me.finish(run, Outcome(error="boom", retryable=False)) == Reject("failed")

    again = await world.worker(OTHER).begin(delivery)

    assert again == Reject("failed")
    assert world.history(job_id).count("Failed") == 1


async def test_an_ambiguous_start_is_read_back_and_run(world: World) -> None:
    """The Started commit landed but its reply was lost: the retry is refused, and the
    ledger says the attempt is this worker's, started by this copy."""
    job_id = world.submit()
    me = world.worker()
    world.faulty.lose_reply.add("start_job")

    run = await me.begin(world.delivery(job_id))

    assert isinstance(run, Run)
    assert world.history(job_id) == ["Submitted", "Started"]
    assert await me.finish(run, Outcome(result={})) == Ack("succeeded")


async def test_an_ambiguous_failure_is_read_back_and_rejected_into_the_dlq(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)
    world.faulty.lose_reply.add("fail_attempt")

    decision = await me.finish(run, Outcome(error="PermanentError: no", retryable=False))

    assert decision == Reject("failed")
    assert decision.job is None  # the write was not seen to commit: counted elsewhere
    assert world.history(job_id).count("Failed") == 1


async def test_an_ambiguous_success_is_read_back_and_acked(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)
    world.faulty.lose_reply.add("complete_job")

    assert await me.finish(run, Outcome(result={"n": 1})) == Ack("succeeded")
    assert world.history(job_id).count("Succeeded") == 1


async def test_the_store_being_down_is_waited_out_not_given_up(world: World) -> None:
    job_id = world.submit()
    world.faulty.unreachable["start_job"] = 3

    run = await world.worker().begin(world.delivery(job_id))

    assert isinstance(run, Run)
    assert world.history(job_id) == ["Submitted", "Started"]


async def test_a_copy_redelivered_to_its_own_worker_while_it_runs_waits_and_never_runs_twice(
    world: World,
) -> None:
    job_id = world.submit()
    me = world.worker()
    delivery = world.delivery(job_id)
    run = await me.begin(delivery)
    assert isinstance(run, Run)

    again = await me.begin(delivery)  # the same copy, back after a dropped connection

    assert isinstance(again, Hold)
    world.on_sleep = lambda: None
    finished = await me.finish(run, Outcome(result={}))
    assert finished == Ack("succeeded")
    assert await me.wait_out(delivery, again) == Ack("ended elsewhere")
    assert world.history(job_id).count("Started") == 1


async def test_a_live_worker_holds_an_attempt_it_started_after_its_last_heartbeat(
    world: World,
) -> None:
    """The early drop: the other worker's heartbeat listed its jobs before this start,
    so the list cannot name it; the attempt is still its, and not recorded lost."""
    job_id = world.submit()
    other = world.worker(OTHER)
    await other.beat()  # lists nothing
    delivery = world.delivery(job_id)
    run = await other.begin(delivery)
    assert isinstance(run, Run)
    me = world.worker()

    hold = await me.begin(delivery)  # the copy, redelivered after OTHER's connection dropped
    assert isinstance(hold, Hold)
    polls: list[int] = []

    def other_finishes() -> None:
        polls.append(1)
        if len(polls) == 3:
            run_job = world.job(job_id)
            world.ledger.complete_job(job_id, {}, Origin(OTHER), attempt=run_job.attempt)

    world.on_sleep = other_finishes
    settled = await me.wait_out(delivery, hold)

    assert settled == Ack("ended elsewhere")
    assert world.history(job_id) == ["Submitted", "Started", "Succeeded"]
    assert len(polls) == 3


async def test_an_attempt_of_a_dead_worker_is_recorded_lost_and_retried(world: World) -> None:
    job_id = world.submit()
    other = world.worker(OTHER)
    delivery = world.delivery(job_id)
    assert isinstance(await other.begin(delivery), Run)
    await other.beat()  # lists the job
    world.liveness.die(OTHER)
    me = world.worker()

    hold = await me.begin(delivery)
    assert isinstance(hold, Hold)
    settled = await me.wait_out(delivery, hold)

    assert settled == Ack("lost")
    job = world.job(job_id)
    assert job.status is Status.RETRY_SCHEDULED
    assert job.error == f"attempt 1 was lost: worker {OTHER} stopped"
    assert world.now >= 3.0  # it looked dead for longer than a heartbeat first


async def test_a_holder_that_beats_again_after_a_pause_is_not_taken_for_dead(
    world: World,
) -> None:
    """Its beats paused (its database restarted) past the TTL, then resumed: the
    attempt is still its own."""
    job_id = world.submit()
    other = world.worker(OTHER)
    delivery = world.delivery(job_id)
    assert isinstance(await other.begin(delivery), Run)
    await other.beat()
    world.liveness.die(OTHER)  # silent past its TTL
    me = world.worker()
    hold = await me.begin(delivery)
    assert isinstance(hold, Hold)
    polls: list[int] = []

    def beats_again_then_finishes() -> None:
        polls.append(1)
        if len(polls) == 2:
            world.liveness.rows[OTHER] = (True, [str(job_id)], datetime.now(UTC))
        if len(polls) == 6:
            world.ledger.complete_job(job_id, {}, Origin(OTHER), attempt=1)

    world.on_sleep = beats_again_then_finishes
    assert await me.wait_out(delivery, hold) == Ack("ended elsewhere")
    assert "AttemptFailed" not in world.history(job_id)


async def test_a_lost_last_attempt_fails_the_job_and_only_its_own_copy_goes_to_the_dlq(
    world: World,
) -> None:
    job_id = world.submit()  # echo: two attempts
    other, me = world.worker(OTHER), world.worker()
    for attempt in (1, 2):
        delivery = world.delivery(job_id, attempt)
        assert isinstance(await other.begin(delivery), Run)
        await other.beat()
        world.liveness.die(OTHER)
        duplicate = replace(delivery, delivery_id="d" * 16)  # a copy the dispatcher sent twice
        hold = await me.begin(duplicate)
        assert isinstance(hold, Hold)
        settled = await me.wait_out(duplicate, hold)
        world.liveness.rows[OTHER] = (True, [], datetime.min)

    assert settled == Ack("lost")  # not the attempt's own copy
    assert world.job(job_id).status is Status.FAILED
    assert await me.begin(delivery) == Reject("failed")  # the dead worker's copy, back


async def test_an_operator_moving_the_failed_attempts_copy_back_runs_the_job_again(
    world: World,
) -> None:
    job_id = world.submit()
    me = world.worker()
    delivery = world.delivery(job_id)
    run = await me.begin(delivery)
    assert isinstance(run, Run)
    await me.finish(run, Outcome(error="boom", retryable=False))

    decision = await me.begin(delivery, redrive=True)

    assert decision == Ack("redriven")
    retried = world.ledger.job_history(job_id)[-1]
    assert type(retried).__name__ == "RetryRequested" and retried.actor == "operator"


async def test_a_redrive_that_is_not_the_failed_attempts_own_copy_changes_nothing(
    world: World,
) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)
    await me.finish(run, Outcome(error="boom", retryable=False))

    forged = await me.begin(world.delivery(job_id), redrive=True)  # any x-death, any copy

    assert forged == Ack("stale")
    assert world.job(job_id).status is Status.FAILED


async def test_a_delivery_for_no_job_or_not_its_job_is_dead_lettered(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    ghost = replace(world.delivery(job_id), job_id=uuid4())
    other_tenant = replace(world.delivery(job_id), tenant="t2")

    assert await me.begin(ghost) == DeadLetter("unknown job")
    assert await me.begin(other_tenant) == DeadLetter(
        "the message does not match its job in the ledger"
    )
    assert world.history(job_id) == ["Submitted"]


async def test_params_the_worker_refuses_fail_the_job_and_free_its_lease(world: World) -> None:
    job_id = world.submit("solo", {"n": "not a number"})

    decision = await world.worker().begin(world.delivery(job_id))

    assert decision == Reject("failed")
    assert world.history(job_id) == ["Submitted", "Started", "AttemptFailed", "Failed"]
    assert world.limiter.leases == {}


async def test_a_lease_is_freed_when_the_start_is_refused(world: World) -> None:
    job_id = world.submit("solo")
    me = world.worker()
    delivery = world.delivery(job_id)
    run = await me.begin(delivery)
    assert isinstance(run, Run)
    assert world.limiter.leases == {job_id: ME}

    assert isinstance(await world.worker(OTHER).begin(delivery), Hold)
    assert world.limiter.leases == {job_id: ME}  # the holder's lease is not touched
    await me.finish(run, Outcome(result={}))
    assert world.limiter.leases == {}


async def test_a_rate_limited_delivery_is_deferred_without_spending_an_attempt(
    world: World,
) -> None:
    job_id = world.submit("metered")
    world.limiter.wait_s = 0.7

    assert await world.worker().begin(world.delivery(job_id)) == Defer(0.7)
    assert world.job(job_id).status is Status.QUEUED


async def test_a_handler_stopped_without_a_cancel_in_the_ledger_runs_again(world: World) -> None:
    """A forged cancel broadcast stopped it: the attempt is given back, not stuck."""
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)

    decision = await me.finish(run, Outcome(cancelled=True))

    assert decision == Ack("retry_scheduled")
    assert world.history(job_id)[-1] == "AttemptInterrupted"


async def test_a_requested_cancel_is_confirmed(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)
    world.ledger.cancel_job(job_id, USER)

    assert await me.report(run, 10, "working") is True
    assert await me.cancel_requested(job_id) is True
    assert await me.finish(run, Outcome(cancelled=True)) == Ack("cancelled")


async def test_an_interrupted_attempt_is_handed_back_without_counting(world: World) -> None:
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)

    assert await me.finish(run, Outcome(interrupted=True)) == Ack("retry_scheduled")
    job = world.job(job_id)
    assert job.attempts_left == 2


async def test_a_cancel_is_asked_only_of_jobs_this_worker_runs(world: World) -> None:
    job_id = world.submit()
    world.ledger.start_job(job_id, 1, OTHER, Origin(OTHER))
    world.ledger.cancel_job(job_id, USER)

    assert await world.worker().cancel_requested(job_id) is False


async def test_a_job_retried_by_a_user_starts_though_the_workers_copy_says_failed(
    world: World,
) -> None:
    """The worker's cached copy is its own last write (failed); the ledger has the
    user's retry since (queued, written by the gateway): attempt 2 starts."""
    job_id = world.submit()
    me = world.worker()
    run = await me.begin(world.delivery(job_id))
    assert isinstance(run, Run)
    await me.finish(run, Outcome(error="boom", retryable=False))
    failed = world.job(job_id)
    world.ledger.retry_job(job_id, USER)
    world.ledger.repository.cache.put(job_id, failed)  # as the worker's own cache has it

    again = await me.begin(world.delivery(job_id, attempt=2))

    assert isinstance(again, Run) and again.job.attempt == 2
