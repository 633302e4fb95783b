"""Group commit over the in-memory event store: one save for many callers, and a
conflict in a batch costs only its own caller."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from domain.errors import StaleDelivery
from domain.group_commit import GroupRead
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
    app = ledger(GROUP_COMMIT_MAX_WAIT_S="0.05")
    assert app.writer is not None
    abandoned_job, abandoned_save, threads_save = _submitted(), _submitted(), _submitted()
    abandoned = asyncio.ensure_future(app.append_submitted_async(abandoned_job))
    raw = app.writer.save_async(abandoned_save)  # the writer's own future, given up on too
    from_thread = app.writer.save_later(threads_save)  # and a thread's
    await asyncio.sleep(0)  # the submit is handed over
    assert abandoned.cancel() and raw.cancel() and from_thread.cancel()
    later = await asyncio.to_thread(submit, app)  # would hang had the writer died

    assert app.get_job(later).status == "queued"
    assert app.get_job(abandoned_job.id).status == "queued"
    assert app.get_job(abandoned_save.id).status == "queued"
    assert app.get_job(threads_save.id).status == "queued"
    app.close()


def test_a_batch_answers_its_callers_on_one_loop_with_one_wake_up() -> None:
    """Callers on an event loop are answered on it, all of a batch with one call into
    the loop: each thread-safe call is a write to the loop's wake-up pipe."""
    app = ledger(GROUP_COMMIT_MAX_WAIT_S="0.05")
    assert app.writer is not None
    writer = app.writer
    loop = asyncio.new_event_loop()
    calls = 0
    threadsafe = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return threadsafe(*args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

    async def save_ten() -> list[int]:
        jobs = [_submitted() for _ in range(10)]
        return list(await asyncio.gather(*(writer.save_async(job) for job in jobs)))

    try:
        positions = loop.run_until_complete(save_ten())
    finally:
        loop.close()
    assert writer.batches == 1, "the ten saves were written together"
    assert sorted(positions) == positions and len(set(positions)) == 10
    assert calls == 1


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
