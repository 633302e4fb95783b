"""Group commit over the in-memory event store: one save for many callers, and a
conflict in a batch costs only its own caller."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from domain import group_commit
from domain.errors import StaleDelivery
from domain.group_commit import GroupCommit, GroupRead
from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin

ORIGIN = Origin(actor="test")


def ledger(**env: str) -> JobLedger:
    return JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo", "GROUP_COMMIT": "y", **env})


def submit(app: JobLedger) -> UUID:
    job_id = uuid4()
    app.submit_job(
        job_id=job_id,
        tenant="t",
        case_id="c",
        job_type="echo",
        params={},
        pool="default",
        max_attempts=1,
        origin=ORIGIN,
    )
    return job_id


def test_concurrent_saves_are_written_in_fewer_transactions_than_callers() -> None:
    app = ledger(GROUP_COMMIT_MAX_WAIT_S="0.05")
    assert app.writer is not None
    barrier = threading.Barrier(20)
    ids: list[UUID] = []

    def caller() -> None:
        barrier.wait()
        ids.append(submit(app))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(ids) == 20 and all(app.get_job(i).status == "queued" for i in ids)
    assert app.writer.saved == 20
    assert app.writer.batches < 20
    app.close()


def test_a_conflict_in_a_batch_fails_only_its_own_caller() -> None:
    app = ledger(GROUP_COMMIT_MAX_WAIT_S="0.05")
    job_id = submit(app)
    stale = app.get_job(job_id)
    app.start_job(job_id, 1, "w1", ORIGIN)
    stale.cancel(ORIGIN)  # decided on a copy that is now one version behind
    other = app.get_job(submit(app))
    other.cancel(ORIGIN)
    results: dict[str, object] = {}

    def save(name: str, job: object) -> None:
        try:
            results[name] = app.writer.save(job)  # type: ignore[union-attr]
        except IntegrityError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=save, args=args) for args in [("stale", stale), ("other", other)]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert isinstance(results["stale"], IntegrityError)
    assert isinstance(results["other"], int) and results["other"] > 0
    assert app.get_job(other.id).status == "cancelled"
    assert app.get_job(job_id).status == "running"
    app.close()


def test_a_worker_without_fastforward_believes_a_refusal_only_from_the_store() -> None:
    app = ledger(AGGREGATE_CACHE_MAXSIZE="100", AGGREGATE_CACHE_FASTFORWARD="n")
    job_id = submit(app)
    app.cancel_job(job_id, ORIGIN)
    cancelled = app.get_job(job_id)  # the copy this process caches: cancelled
    # Elsewhere (the gateway), the job is retried: the store moves on, the cache does not.
    retried = copy.deepcopy(cancelled)
    retried.retry(ORIGIN)
    app.events.put(retried.collect_events())
    assert app.get_job(job_id).status == "cancelled"

    committed = app.start_job(job_id, 1, "w1", ORIGIN)

    assert committed.job.status == "running"
    assert app.read_job(job_id).status == "running"
    with pytest.raises(StaleDelivery):
        app.start_job(job_id, 1, "w2", ORIGIN)  # refused by the store's copy too
    app.close()


def test_a_job_that_cannot_be_read_fails_only_its_own_caller() -> None:
    bad = uuid4()
    good = [uuid4() for _ in range(5)]
    queries: list[list[UUID]] = []

    def read(job_ids: Sequence[UUID]) -> dict[UUID, list[str]]:
        queries.append(list(job_ids))
        if bad in job_ids:
            raise ValueError("undecodable")
        return {job_id: [f"event of {job_id}"] for job_id in job_ids}

    reader = GroupRead(read, max_wait_s=0.05)
    barrier = threading.Barrier(len(good) + 1)
    results: dict[UUID, object] = {}

    def caller(job_id: UUID) -> None:
        barrier.wait()
        try:
            results[job_id] = reader.events(job_id)
        except ValueError as exc:
            results[job_id] = exc

    threads = [threading.Thread(target=caller, args=(j,)) for j in [*good, bad]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.close()

    assert any(len(q) > 1 for q in queries)  # they were read together first
    assert isinstance(results[bad], ValueError)
    assert all(results[j] == [f"event of {j}"] for j in good)


def _submitted() -> Job:
    return Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="echo",
        params={},
        pool="default",
        max_attempts=1,
        origin=ORIGIN,
    )


async def test_a_caller_that_gives_up_on_its_save_leaves_the_writer_serving_the_others() -> None:
    """An awaiting request may be cancelled (its client gone, a shutdown) while its job
    is in the batch being written: the job is appended all the same, and the writer
    goes on serving everyone else."""
    app = ledger()
    writer = app.writer
    assert writer is not None
    writing, release = threading.Event(), threading.Event()
    save = writer._save

    def held(*events: Any) -> Sequence[Any]:
        writing.set()
        release.wait(10)
        return save(*events)

    writer._save = held
    abandoned_job, abandoned_save, threads_save = _submitted(), _submitted(), _submitted()
    abandoned = asyncio.ensure_future(app.append_submitted_async(abandoned_job))
    raw = writer.save_async(abandoned_save)  # the writer's own future, given up on too
    from_thread = writer.save_later(threads_save)  # and a thread's
    assert await asyncio.to_thread(writing.wait, 10)  # being written, or queued behind
    assert abandoned.cancel() and raw.cancel() and from_thread.cancel()
    release.set()
    later = await asyncio.to_thread(submit, app)  # would hang had the writer died

    assert app.get_job(later).status == "queued"
    assert app.get_job(abandoned_job.id).status == "queued"
    assert app.get_job(abandoned_save.id).status == "queued"
    assert app.get_job(threads_save.id).status == "queued"
    app.close()


def test_a_loop_closed_before_its_answer_leaves_the_writer_serving() -> None:
    """A process stopping closes its loop while a save it handed over is written: the
    job stands, no one is answered, and the writer serves the next caller."""
    app = ledger(GROUP_COMMIT_MAX_WAIT_S="0.05")
    assert app.writer is not None
    writer = app.writer
    job = _submitted()
    loop = asyncio.new_event_loop()

    async def hand_over() -> None:
        writer.save_async(job)

    loop.run_until_complete(hand_over())
    loop.close()  # before the writer's wait is out
    later = submit(app)  # would hang had the writer died on the closed loop

    assert app.get_job(later).status == "queued"
    assert app.get_job(job.id).status == "queued"
    app.close()


class _Saved:
    """What a save returns for one event: its job and position."""

    def __init__(self, job_id: UUID, position: int) -> None:
        self.domain_event = type("Event", (), {"originator_id": job_id})()
        self.notification = type("Notification", (), {"id": position})()


class _Aggregate:
    def __init__(self) -> None:
        self.id = uuid4()

    def collect_events(self) -> list[UUID]:
        return [self.id]


class _HeldSave:
    """A save that numbers events from 1 and holds each batch until ``release``."""

    def __init__(self) -> None:
        self.writing, self.release = threading.Event(), threading.Event()
        self.positions = iter(range(1, 100))

    def __call__(self, *job_ids: UUID) -> list[_Saved]:
        self.writing.set()
        self.release.wait(10)
        return [_Saved(job_id, next(self.positions)) for job_id in job_ids]


@pytest.fixture
def writer_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits for company the writer thread sleeps, in order."""
    waits: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.current_thread().name == "jobledger-writer":
            waits.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return waits


def test_callers_who_gathered_during_a_write_wait_only_out_the_rest_of_the_wait(
    writer_waits: list[float],
) -> None:
    """The wait for company counts from the first caller's hand-over: those who
    arrived while the last batch was being written have waited through it."""
    save = _HeldSave()
    writing, release = save.writing, save.release
    waits = writer_waits

    writer = GroupCommit(save, max_wait_s=0.2)
    try:
        first = writer.save_later(_Aggregate())
        assert writing.wait(10)  # the first batch is being written
        behind = [writer.save_later(_Aggregate()) for _ in range(3)]
        time.sleep(0.3)  # longer than the wait, while the first batch is written
        release.set()
        assert first.result(10) == 1
        assert [f.result(10) for f in behind] == [2, 3, 4]
    finally:
        writer.close()
    assert writer.batches == 2, "the three behind the first were written together"
    assert len(waits) == 1 and 0 < waits[0] <= 0.2, "only the lone first caller waited"


def test_a_lone_caller_stops_waiting_for_company_that_does_not_come(
    writer_waits: list[float],
) -> None:
    """One caller saving one change at a time (a single client submitting in a row):
    after ``FRUITLESS_WAITS`` waits that gathered no one, each save is written at
    once, but for one probe in ``PROBE_EVERY``. A batch with company of its own
    (callers who queued during a write) brings the wait back for the next lone
    caller."""
    save = _HeldSave()
    save.release.set()
    # Long enough that the writer takes each caller within the wait, even on a busy
    # machine: a caller taken after its wait is out is written without one, and
    # counts as neither a wait nor a lone write.
    writer = GroupCommit(save, max_wait_s=0.1)
    fruitless, probe_every = group_commit.FRUITLESS_WAITS, group_commit.PROBE_EVERY
    lone = fruitless + 2 * probe_every
    try:
        for _ in range(lone):
            writer.save(_Aggregate())
        assert len(writer_waits) == fruitless + 2, "after the fruitless waits, two probes"
        assert writer.batches == lone

        save.release.clear()
        save.writing.clear()
        first = writer.save_later(_Aggregate())  # written at once, and held
        assert save.writing.wait(10)
        behind = [writer.save_later(_Aggregate()) for _ in range(3)]  # queue during it
        save.release.set()
        assert [first.result(10)] + [f.result(10) for f in behind] == list(
            range(lone + 1, lone + 5)
        )
        assert writer.batches == lone + 2, "the three behind the first went together"
        waits_before = len(writer_waits)
        writer.save(_Aggregate())
    finally:
        writer.close()
    assert len(writer_waits) == waits_before + 1, "company seen: a lone caller waits again"


def test_a_batch_answers_its_callers_on_one_loop_with_one_wake_up() -> None:
    """Callers on an event loop are answered on it, all of a batch with one call into
    the loop: each thread-safe call is a write to the loop's wake-up pipe."""
    save = _HeldSave()
    writing, release = save.writing, save.release

    writer = GroupCommit(save, max_wait_s=0)
    loop = asyncio.new_event_loop()
    calls = 0
    threadsafe = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += callback is group_commit._answer
        return threadsafe(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]

    async def save_ten() -> list[int]:
        ahead = writer.save_later(_Aggregate())  # a thread's save, being written
        assert await asyncio.to_thread(writing.wait, 10)
        saving = [writer.save_async(_Aggregate()) for _ in range(10)]  # queued behind it
        release.set()
        assert await asyncio.wrap_future(ahead) == 1
        return list(await asyncio.gather(*saving))

    try:
        positions_of_ten = loop.run_until_complete(save_ten())
    finally:
        loop.close()
        writer.close()
    assert writer.batches == 2, "the ten were written together"
    assert positions_of_ten == list(range(2, 12))
    assert calls == 1
