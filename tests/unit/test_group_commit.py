"""Group commit over the in-memory event store: one save for many callers, and a
conflict in a batch costs only its own caller."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
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


def test_a_caller_that_gives_up_on_its_save_leaves_the_writer_serving_the_others() -> None:
    """An awaiting request may be cancelled (its client gone, a shutdown) while its job
    is in the batch being written: the job is appended all the same, and the writer
    goes on serving everyone else."""
    app = ledger(GROUP_COMMIT_MAX_WAIT_S="0.05")
    assert app.writer is not None
    abandoned_job, abandoned_save = _submitted(), _submitted()
    abandoned = app.append_submitted_later(abandoned_job)
    raw = app.writer.save_later(abandoned_save)  # the writer's own future, given up on too
    assert abandoned.cancel() and raw.cancel()
    later = submit(app)  # would hang if the writer had died on the cancelled futures

    assert app.get_job(later).status == "queued"
    assert app.get_job(abandoned_job.id).status == "queued"
    assert app.get_job(abandoned_save.id).status == "queued"
    app.close()
