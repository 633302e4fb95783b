"""A worker's ledger reads the jobs it starts many to a query, against the real
PostgreSQL ledger, and reads them exactly as a single read would."""

from __future__ import annotations

import threading
import uuid

import pytest

from domain.errors import JobNotFound
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import LEDGER_ORIGIN, submit_to_ledger


def test_concurrent_starts_read_their_jobs_in_fewer_queries_than_jobs(
    pg: PostgresSettings,
) -> None:
    gateway = ledger_store.open_ledger(pg)
    worker = ledger_store.open_ledger(pg, LedgerSettings(), fastforward=False)
    assert worker.reader is not None
    ids = [submit_to_ledger(gateway, n, max_attempts=3) for n in range(60)]
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def start(job_id: uuid.UUID) -> None:
        barrier.wait()
        try:
            worker.start_job(job_id, 1, "w1", LEDGER_ORIGIN)
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
    job_id = submit_to_ledger(gateway, 7, max_attempts=3)
    gateway.start_job(job_id, 1, "w0", LEDGER_ORIGIN)
    gateway.report_progress(job_id, 40, "half", LEDGER_ORIGIN)
    gateway.fail_attempt(job_id, "flaky", retryable=True, retry_delay_s=0, origin=LEDGER_ORIGIN)

    read = worker.get_job(job_id)
    single = gateway.read_job(job_id)

    assert read.version == single.version == 4
    assert vars(read) == vars(single)
    with pytest.raises(JobNotFound):
        worker.get_job(uuid.uuid4())
    worker.close()
    gateway.close()
