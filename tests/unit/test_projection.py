"""JobProjection into MemoryJobView: the read side agrees with the aggregate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from domain.job import Job, Status
from domain.ledger import JobLedger
from domain.origin import Origin
from projections.job_view import merged
from projections.memory import MemoryJobView
from projections.projection import JobProjection, JobRow, ViewChange

APP = "JobLedger"
ORIGIN = Origin(actor="alice", correlation_id="corr-1", traceparent="tp-1")
WORKER = Origin(actor="worker-1", correlation_id="corr-1", traceparent="tp-2")
PROJECTION = JobProjection()

# Fields the row shares with the aggregate, under the same name.
SHARED = (
    "tenant",
    "case_id",
    "job_type",
    "progress",
    "progress_message",
    "attempt",
    "max_attempts",
    "error",
    "result",
    "correlation_id",
    "cancel_requested",
    "submitted_by",
    "submitted_at",
    "started_at",
    "finished_at",
)


@pytest.fixture
def ledger() -> JobLedger:
    return JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def submit(
    ledger: JobLedger, *, tenant: str = "tenant-1", case_id: str = "case-1", max_attempts: int = 3
) -> UUID:
    job_id = uuid4()
    ledger.submit_job(
        job_id=job_id,
        tenant=tenant,
        case_id=case_id,
        job_type="segment",
        params={"scan_id": "s1"},
        pool="gpu",
        max_attempts=max_attempts,
        origin=ORIGIN,
    )
    return job_id


def project(view: MemoryJobView, event: Any, position: int) -> None:
    view.apply(list(PROJECTION.changes(event, position)), Tracking(APP, position))


def project_ledger(view: MemoryJobView, ledger: JobLedger) -> None:
    """Apply every ledger event the view has not seen, one position at a time."""
    while True:
        after = view.max_tracking_id(APP) or 0
        notifications = ledger.notification_log.select(after + 1, 10)
        if not notifications:
            return
        for n in notifications:
            project(view, ledger.mapper.to_domain_event(n), n.id)


def lifecycle(ledger: JobLedger) -> UUID:
    """A job that fails once, is retried by the worker, is cancelled, retried by a
    user and finally succeeds."""
    job_id = submit(ledger, max_attempts=2)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.report_progress(job_id, 40, "denoise", WORKER)
    ledger.fail_attempt(job_id, "flaky", retryable=True, retry_delay_s=30.0, origin=WORKER)
    ledger.start_job(job_id, 2, "w2", WORKER)
    ledger.report_progress(job_id, 20, "load", WORKER)
    ledger.cancel_job(job_id, ORIGIN)
    ledger.confirm_cancelled(job_id, WORKER)
    ledger.retry_job(job_id, ORIGIN)
    ledger.start_job(job_id, 3, "w3", WORKER)
    ledger.report_progress(job_id, 90, "meshes", WORKER)
    ledger.complete_job(job_id, {"mask_id": "m1"}, WORKER)
    return job_id


def replay(events: Sequence[Any]) -> Job:
    job: Any = None
    for event in events:
        job = event.mutate(job)
    assert isinstance(job, Job)
    return job


def assert_row_matches(row: JobRow | None, job: Job) -> None:
    assert row is not None
    assert row.job_id == job.id
    assert row.status == job.status.value
    for name in SHARED:
        assert getattr(row, name) == getattr(job, name), name


def test_the_row_matches_the_aggregate_after_every_event_of_a_lifecycle(
    ledger: JobLedger,
) -> None:
    job_id = lifecycle(ledger)
    history = ledger.job_history(job_id)
    view = MemoryJobView()

    for position, event in enumerate(history, start=1):
        project(view, event, position)

        row = view.get(job_id)
        assert_row_matches(row, replay(history[:position]))
        assert row is not None
        assert row.position == position
        assert row.submitted_position == 1
        assert row.updated_at == event.timestamp

    assert view.max_tracking_id(APP) == len(history)
    row = view.get(job_id)
    assert row is not None
    assert row.status == "succeeded"
    assert (row.progress, row.attempt, row.result) == (100, 3, {"mask_id": "m1"})
    assert row.error is None


def test_the_row_of_an_interrupted_job_is_retry_scheduled_as_the_aggregate_says(
    ledger: JobLedger,
) -> None:
    """A worker stopped by SIGTERM hands its attempt back: listings must say
    retry_scheduled, as GET /jobs/{id} does, not running until the next start."""
    job_id = submit(ledger)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.interrupt_attempt(job_id, "worker shut down", attempt=1, origin=WORKER)
    view = MemoryJobView()

    project_ledger(view, ledger)

    row, job = view.get(job_id), ledger.get_job(job_id)
    assert job.status is Status.RETRY_SCHEDULED
    assert_row_matches(row, job)
    assert row is not None and row.retry_at == job.retry_at


def test_the_row_of_a_failed_job_shows_its_error(ledger: JobLedger) -> None:
    job_id = submit(ledger, max_attempts=1)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.report_progress(job_id, 30, "x", WORKER)
    ledger.fail_attempt(job_id, "boom", retryable=True, retry_delay_s=5.0, origin=WORKER)
    view = MemoryJobView()

    project_ledger(view, ledger)

    row = view.get(job_id)
    assert_row_matches(row, ledger.get_job(job_id))
    assert row is not None
    assert (row.status, row.error, row.progress, row.result) == ("failed", "boom", 30, None)
    assert row.finished_at is not None
    assert row.retry_at is None


def test_the_row_of_a_retry_scheduled_job_shows_when_it_will_run(ledger: JobLedger) -> None:
    job_id = submit(ledger)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.fail_attempt(job_id, "flaky", retryable=True, retry_delay_s=5.0, origin=WORKER)
    view = MemoryJobView()

    project_ledger(view, ledger)

    row, job = view.get(job_id), ledger.get_job(job_id)
    assert_row_matches(row, job)
    assert row is not None
    assert row.status == Status.RETRY_SCHEDULED.value
    assert row.retry_at == job.retry_at is not None


def test_the_row_and_the_aggregate_agree_on_retry_at_once_the_retry_has_started(
    ledger: JobLedger,
) -> None:
    job_id = submit(ledger)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.fail_attempt(job_id, "flaky", retryable=True, retry_delay_s=5.0, origin=WORKER)
    ledger.start_job(job_id, 2, "w2", WORKER)
    view = MemoryJobView()

    project_ledger(view, ledger)

    row, job = view.get(job_id), ledger.get_job(job_id)
    assert row is not None
    assert row.retry_at is None
    assert job.retry_at == row.retry_at


def test_applying_the_same_position_twice_is_refused_and_changes_nothing(
    ledger: JobLedger,
) -> None:
    job_id = submit(ledger)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.report_progress(job_id, 40, "a", WORKER)
    submitted, started, progressed = ledger.job_history(job_id)
    view = MemoryJobView()
    project(view, submitted, 1)
    project(view, started, 2)
    row_before = view.get(job_id)

    with pytest.raises(IntegrityError):
        project(view, progressed, 2)
    with pytest.raises(IntegrityError):
        project(view, progressed, 1)

    assert view.get(job_id) == row_before
    assert view.max_tracking_id(APP) == 2
    project(view, progressed, 3)
    row = view.get(job_id)
    assert row is not None
    assert row.progress == 40


def test_a_batch_that_fails_half_way_is_not_applied_at_all(ledger: JobLedger) -> None:
    job_id = submit(ledger)
    (submitted,) = ledger.job_history(job_id)
    view = MemoryJobView()
    unseen = ViewChange(uuid4(), {"progress": 5})

    with pytest.raises(LookupError):
        view.apply([*PROJECTION.changes(submitted, 1), unseen], Tracking(APP, 1))

    assert view.get(job_id) is None
    assert view.max_tracking_id(APP) is None


def test_positions_are_tracked_per_application(ledger: JobLedger) -> None:
    job_id = submit(ledger)
    (submitted,) = ledger.job_history(job_id)
    view = MemoryJobView()

    view.apply(list(PROJECTION.changes(submitted, 5)), Tracking(APP, 5))
    view.apply([], Tracking("Other", 1))

    assert view.max_tracking_id(APP) == 5
    assert view.max_tracking_id("Other") == 1
    assert view.max_tracking_id("Unknown") is None


def test_an_unknown_event_changes_nothing() -> None:
    class Foreign:
        originator_id = uuid4()
        timestamp = None

    assert list(PROJECTION.changes(Foreign(), 1)) == []


def test_list_case_pages_through_a_cases_jobs_newest_first(ledger: JobLedger) -> None:
    jobs = [submit(ledger) for _ in range(5)]
    submit(ledger, case_id="case-2")
    submit(ledger, tenant="tenant-2")
    view = MemoryJobView()
    project_ledger(view, ledger)

    first = view.list_case("tenant-1", "case-1", limit=2)
    second = view.list_case("tenant-1", "case-1", cursor=first.next_cursor, limit=2)
    third = view.list_case("tenant-1", "case-1", cursor=second.next_cursor, limit=2)

    newest_first = list(reversed(jobs))
    assert [r.job_id for r in first.rows] == newest_first[0:2]
    assert [r.job_id for r in second.rows] == newest_first[2:4]
    assert [r.job_id for r in third.rows] == newest_first[4:5]
    assert first.next_cursor is not None
    assert second.next_cursor is not None
    assert third.next_cursor is None


def test_list_case_has_no_next_page_when_the_last_page_is_exactly_full(
    ledger: JobLedger,
) -> None:
    jobs = [submit(ledger) for _ in range(4)]
    view = MemoryJobView()
    project_ledger(view, ledger)

    first = view.list_case("tenant-1", "case-1", limit=2)
    second = view.list_case("tenant-1", "case-1", cursor=first.next_cursor, limit=2)
    everything = view.list_case("tenant-1", "case-1", limit=4)

    assert [r.job_id for r in second.rows] == [jobs[1], jobs[0]]
    assert second.next_cursor is None
    assert len(everything.rows) == 4
    assert everything.next_cursor is None


def test_list_case_filters_by_status(ledger: JobLedger) -> None:
    queued, running, cancelled, also_cancelled = (submit(ledger) for _ in range(4))
    ledger.start_job(running, 1, "w", WORKER)
    ledger.cancel_job(cancelled, ORIGIN)
    ledger.cancel_job(also_cancelled, ORIGIN)
    view = MemoryJobView()
    project_ledger(view, ledger)

    def ids(status: str) -> list[UUID]:
        return [r.job_id for r in view.list_case("tenant-1", "case-1", status=status).rows]

    assert ids("cancelled") == [also_cancelled, cancelled]
    assert ids("running") == [running]
    assert ids("queued") == [queued]
    assert ids("succeeded") == []
    page = view.list_case("tenant-1", "case-1", status="cancelled", limit=1)
    assert [r.job_id for r in page.rows] == [also_cancelled]
    rest = view.list_case("tenant-1", "case-1", status="cancelled", cursor=page.next_cursor)
    assert [r.job_id for r in rest.rows] == [cancelled]


def test_list_case_shows_a_tenant_only_its_own_jobs(ledger: JobLedger) -> None:
    mine = submit(ledger, tenant="tenant-1", case_id="shared")
    theirs = submit(ledger, tenant="tenant-2", case_id="shared")
    view = MemoryJobView()
    project_ledger(view, ledger)

    assert [r.job_id for r in view.list_case("tenant-1", "shared").rows] == [mine]
    assert [r.job_id for r in view.list_case("tenant-2", "shared").rows] == [theirs]
    assert view.list_case("tenant-3", "shared").rows == []


def test_a_batch_merged_to_one_change_per_job_leaves_the_same_rows(ledger: JobLedger) -> None:
    first, second = lifecycle(ledger), submit(ledger)
    ledger.start_job(second, 1, "w1", WORKER)
    notifications = ledger.recorder.select_notifications(1, 100)
    changes = [
        change
        for n in notifications
        for change in PROJECTION.changes(ledger.mapper.to_domain_event(n), n.id)
    ]
    one_by_one, merged_view = MemoryJobView(), MemoryJobView()
    for n in notifications:
        project(one_by_one, ledger.mapper.to_domain_event(n), n.id)

    batch = merged(changes)
    merged_view.apply(batch, Tracking(APP, notifications[-1].id))

    assert [c.job_id for c in batch] == [first, second]
    assert [c.insert for c in batch] == [True, True]
    for job_id in (first, second):
        assert merged_view.get(job_id) == one_by_one.get(job_id)
