"""A worker's ledger reads the jobs it starts many to a query, against the real
PostgreSQL ledger, and reads them exactly as a single read would."""

from __future__ import annotations

import threading
import uuid

import pytest

from domain.errors import JobNotFound
from domain.ledger import JobLedger
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings

ORIGIN = Origin(actor="test", correlation_id="c-1")


@pytest.fixture
def pg(postgres: str, schema: str) -> PostgresSettings:
    settings = PostgresSettings(dbname=postgres, schema=schema)
    ledger_store.ensure_database(settings)
    return settings


def submit(ledger: JobLedger, n: int) -> uuid.UUID:
    job_id = uuid.uuid4()
    ledger.submit_job(
        job_id=job_id,
        tenant="t1",
        case_id=f"case-{n % 3}",
        job_type="echo",
        params={"n": n},
        pool="default",
        max_attempts=3,
        origin=ORIGIN,
    )
    return job_id


def test_concurrent_starts_read_their_jobs_in_fewer_queries_than_jobs(
    pg: PostgresSettings,
) -> None:
    gateway = ledger_store.open_ledger(pg)
    worker = ledger_store.open_ledger(pg, LedgerSettings(), fastforward=False)
    assert worker.reader is not None
    ids = [submit(gateway, n) for n in range(60)]
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def start(job_id: uuid.UUID) -> None:
        barrier.wait()
        try:
            worker.start_job(job_id, 1, "w1", ORIGIN)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(job_id,)) for job_id in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert worker.reader.served == len(ids)
    assert worker.reader.batches < len(ids)
    for n, job_id in enumerate(ids):
        job = gateway.read_job(job_id)
        assert (job.status, job.attempt, job.params) == ("running", 1, {"n": n})
    worker.close()
    gateway.close()


def test_a_job_read_with_others_is_the_job_a_single_read_gives(pg: PostgresSettings) -> None:
    gateway = ledger_store.open_ledger(pg)
    worker = ledger_store.open_ledger(pg, LedgerSettings(), fastforward=False)
    job_id = submit(gateway, 7)
    gateway.start_job(job_id, 1, "w0", ORIGIN)
    gateway.report_progress(job_id, 40, "half", ORIGIN)
    gateway.fail_attempt(job_id, "flaky", retryable=True, retry_delay_s=0, origin=ORIGIN)

    read = worker.get_job(job_id)
    single = gateway.read_job(job_id)

    assert read.version == single.version == 4
    assert vars(read) == vars(single)
    with pytest.raises(JobNotFound):
        worker.get_job(uuid.uuid4())
    worker.close()
    gateway.close()
