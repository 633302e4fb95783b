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


def test_a_tenant_feed_resumed_through_the_view_reads_what_a_scan_of_the_ledger_reads(
    pg: PostgresSettings,
) -> None:
    """A case or tenant feed resumed far back reads its tenant's events through the job
    view's (tenant, position) index, not by scanning every tenant's: the same events,
    in the same order, both below and above what the view has projected."""
    from eventsourcing.persistence import Tracking  # noqa: PLC0415

    from gateway.stream import Feed  # noqa: PLC0415
    from infra.streams import PostgresLedgerHistory  # noqa: PLC0415
    from projections.projection import JobProjection  # noqa: PLC0415

    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    view = ledger_store.open_view(pg)
    for n in range(30):
        job_id = uuid.uuid4()
        ledger.submit_job(
            job_id=job_id,
            tenant="t1" if n % 3 else "t2",
            case_id=f"case-{n % 2}",
            job_type="echo",
            params={},
            pool="default",
            max_attempts=2,
            origin=LEDGER_ORIGIN,
        )
        ledger.start_job(job_id, 1, "w", LEDGER_ORIGIN)
        if n % 4:
            ledger.complete_job(job_id, {"n": n}, LEDGER_ORIGIN)
    every = list(ledger.recorder.select_notifications(start=1, limit=1000))
    projection = JobProjection()
    half = every[len(every) // 2].id  # the view projects only the first half
    for notification in every:
        if notification.id <= half:
            event = ledger.mapper.to_domain_event(notification)
            view.apply(
                list(projection.changes(event, notification.id)),
                Tracking(ledger.name, notification.id),
            )
    history = PostgresLedgerHistory(ledger, view)

    for feed in (Feed("t1"), Feed("t2"), Feed("t1", case_id="case-1")):
        for start in (0, half // 2, half, half + 3):
            read: list[int] = []
            position, more = start, True
            while more:
                page = history.after(feed, position, 7)
                read += [at for _, at in page.events]
                position, more = page.scanned_to, page.more
            expected = [
                n.id
                for n in every
                if n.id > start
                and feed.accepts(*_tenant_case_job(ledger.mapper.to_domain_event(n)))
            ]
            assert read == expected, (feed, start)
    ledger.close()


def _tenant_case_job(event: object) -> tuple[str, str, uuid.UUID]:
    return event.tenant, event.case_id, event.originator_id  # type: ignore[attr-defined]
