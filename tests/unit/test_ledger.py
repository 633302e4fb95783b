"""The JobLedger application over in-memory persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from domain.errors import DuplicateSubmission, InvalidTransition, JobNotFound, StaleDelivery
from domain.job import Job, Status
from domain.ledger import CONFLICT_RETRIES, Committed, JobLedger
from domain.origin import Origin

ORIGIN = Origin(actor="alice", correlation_id="corr-1", traceparent="tp-1")
WORKER = Origin(actor="worker-1", correlation_id="corr-1", traceparent="tp-2")


@pytest.fixture
def ledger() -> JobLedger:
    return JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def submit(ledger: JobLedger, job_id: UUID | None = None, max_attempts: int = 3) -> Committed:
    return ledger.submit_job(
        job_id=job_id or uuid4(),
        tenant="tenant-1",
        case_id="case-1",
        job_type="segment",
        params={"scan_id": "s1"},
        pool="gpu",
        max_attempts=max_attempts,
        origin=ORIGIN,
    )


def kinds(events: object) -> list[str]:
    return [type(e).__name__ for e in events]  # type: ignore[attr-defined]


def test_a_submitted_job_can_be_loaded_back(ledger: JobLedger) -> None:
    job_id = uuid4()

    committed = submit(ledger, job_id, max_attempts=4)

    assert committed.position == 1
    assert committed.job.id == job_id
    job = ledger.get_job(job_id)
    assert job is not committed.job
    assert isinstance(job, Job)
    assert job.id == job_id
    assert job.status is Status.QUEUED
    assert (job.tenant, job.case_id, job.job_type, job.pool) == (
        "tenant-1",
        "case-1",
        "segment",
        "gpu",
    )
    assert job.params == {"scan_id": "s1"}
    assert job.max_attempts == job.attempts_allowed == 4
    assert job.submitted_by == "alice"
    assert job.correlation_id == "corr-1"
    assert job.version == 1


def test_submitting_the_same_job_id_twice_is_a_duplicate_submission(ledger: JobLedger) -> None:
    job_id = uuid4()
    submit(ledger, job_id)

    with pytest.raises(DuplicateSubmission):
        submit(ledger, job_id, max_attempts=9)

    assert kinds(ledger.job_history(job_id)) == ["Submitted"]
    assert ledger.get_job(job_id).max_attempts == 3


def test_commands_return_the_job_and_an_increasing_ledger_position(ledger: JobLedger) -> None:
    job_id = uuid4()
    submitted = submit(ledger, job_id)

    started = ledger.start_job(job_id, 1, "w1", WORKER)
    progressed = ledger.report_progress(job_id, 50, "half", WORKER)
    completed = ledger.complete_job(job_id, {"mask_id": "m"}, WORKER)

    assert submitted.position < started.position < progressed.position < completed.position
    assert started.job.status is Status.RUNNING
    assert started.job.attempt == 1
    assert progressed.job.progress == 50
    assert completed.job.status is Status.SUCCEEDED
    assert completed.job.result == {"mask_id": "m"}
    assert ledger.get_job(job_id).status is Status.SUCCEEDED


def test_positions_increase_across_jobs(ledger: JobLedger) -> None:
    a, b = uuid4(), uuid4()
    positions = [
        submit(ledger, a).position,
        submit(ledger, b).position,
        ledger.start_job(a, 1, "w", WORKER).position,
        ledger.start_job(b, 1, "w", WORKER).position,
    ]

    assert positions == [1, 2, 3, 4]


def test_a_command_recording_two_events_returns_the_position_of_the_last(
    ledger: JobLedger,
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    started = ledger.start_job(job_id, 1, "w", WORKER)

    failed = ledger.fail_attempt(job_id, "bad", retryable=False, retry_delay_s=None, origin=WORKER)

    assert failed.position == started.position + 2
    assert kinds(ledger.job_history(job_id))[-2:] == ["AttemptFailed", "Failed"]


def test_job_history_returns_every_event_oldest_first(ledger: JobLedger) -> None:
    job_id = uuid4()
    submit(ledger, job_id, max_attempts=2)
    ledger.start_job(job_id, 1, "w1", WORKER)
    ledger.report_progress(job_id, 20, "a", WORKER)
    ledger.fail_attempt(job_id, "flaky", retryable=True, retry_delay_s=1.0, origin=WORKER)
    ledger.start_job(job_id, 2, "w2", WORKER)
    ledger.cancel_job(job_id, ORIGIN)
    ledger.confirm_cancelled(job_id, WORKER)
    ledger.retry_job(job_id, ORIGIN)

    history = ledger.job_history(job_id)

    assert kinds(history) == [
        "Submitted",
        "Started",
        "ProgressReported",
        "AttemptFailed",
        "Started",
        "CancelRequested",
        "Cancelled",
        "RetryRequested",
    ]
    assert [e.originator_version for e in history] == list(range(1, 9))
    assert all(e.originator_id == job_id for e in history)
    job = ledger.get_job(job_id)
    assert job.status is Status.QUEUED
    assert job.attempts_allowed == 4


def test_loading_an_unknown_job_raises_job_not_found(ledger: JobLedger) -> None:
    with pytest.raises(JobNotFound):
        ledger.get_job(uuid4())


def test_the_history_of_an_unknown_job_raises_job_not_found(ledger: JobLedger) -> None:
    with pytest.raises(JobNotFound):
        ledger.job_history(uuid4())


def test_a_command_on_an_unknown_job_raises_job_not_found(ledger: JobLedger) -> None:
    with pytest.raises(JobNotFound):
        ledger.start_job(uuid4(), 1, "w", WORKER)


def test_a_command_the_state_machine_refuses_records_nothing(ledger: JobLedger) -> None:
    job_id = uuid4()
    submit(ledger, job_id)

    with pytest.raises(InvalidTransition):
        ledger.complete_job(job_id, {}, WORKER)
    with pytest.raises(StaleDelivery):
        ledger.start_job(job_id, 2, "w", WORKER)

    assert kinds(ledger.job_history(job_id)) == ["Submitted"]


def test_a_retryable_failure_with_a_delay_schedules_the_retry_that_far_ahead(
    ledger: JobLedger,
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)
    before = datetime.now(UTC)

    committed = ledger.fail_attempt(
        job_id, "flaky", retryable=True, retry_delay_s=30.0, origin=WORKER
    )

    after = datetime.now(UTC)
    job = ledger.get_job(job_id)
    assert committed.job.status is job.status is Status.RETRY_SCHEDULED
    assert job.retry_at is not None
    assert before + timedelta(seconds=30) <= job.retry_at <= after + timedelta(seconds=30)
    assert job.error == "flaky"


@pytest.mark.parametrize(
    ("retryable", "delay"),
    [(False, 30.0), (True, None), (False, None)],
    ids=["not-retryable", "no-delay", "neither"],
)
def test_a_failure_that_is_not_retryable_or_has_no_delay_fails_the_job(
    ledger: JobLedger, retryable: bool, delay: float | None
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)

    ledger.fail_attempt(job_id, "bad", retryable=retryable, retry_delay_s=delay, origin=WORKER)

    job = ledger.get_job(job_id)
    assert job.status is Status.FAILED
    assert job.retry_at is None
    history = ledger.job_history(job_id)
    assert history[-2].retryable is retryable


def test_cancelling_a_job_after_a_progress_report_keeps_the_history_in_order(
    ledger: JobLedger,
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)
    # Another process reports progress through its own copy of the job.
    copy = ledger.get_job(job_id)
    copy.report_progress(40, "segmenting", WORKER)
    ledger.save(copy)

    committed = ledger.cancel_job(job_id, ORIGIN)

    assert committed.job.cancel_requested is True
    assert committed.job.progress == 40
    assert kinds(ledger.job_history(job_id)) == [
        "Submitted",
        "Started",
        "ProgressReported",
        "CancelRequested",
    ]


def test_a_command_that_meets_a_concurrent_write_reloads_and_decides_again(
    ledger: JobLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)
    stale = ledger.get_job(job_id)
    # A concurrent writer moves the job on after the command loaded its copy.
    ledger.report_progress(job_id, 60, "meshes", WORKER)
    real_get_job = ledger.get_job
    loads: list[Job] = []

    def get_job(jid: UUID) -> Job:
        job = stale if not loads else real_get_job(jid)
        loads.append(job)
        return job

    monkeypatch.setattr(ledger, "get_job", get_job)

    committed = ledger.cancel_job(job_id, ORIGIN)

    assert len(loads) == 2
    assert committed.job is loads[1]
    assert committed.job.progress == 60
    history = ledger.job_history(job_id)
    assert kinds(history) == ["Submitted", "Started", "ProgressReported", "CancelRequested"]
    assert [e.originator_version for e in history] == [1, 2, 3, 4]
    assert history[-1].actor == "alice"


def test_the_state_machine_decides_again_after_a_conflict(
    ledger: JobLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)
    stale = ledger.get_job(job_id)
    # Meanwhile the job succeeded: on reload, failing it is no longer allowed.
    ledger.complete_job(job_id, {"ok": True}, WORKER)
    real_get_job = ledger.get_job
    calls = iter([stale])
    monkeypatch.setattr(ledger, "get_job", lambda jid: next(calls, None) or real_get_job(jid))

    with pytest.raises(InvalidTransition):
        ledger.fail_attempt(job_id, "late", retryable=False, retry_delay_s=None, origin=WORKER)

    assert kinds(ledger.job_history(job_id))[-1] == "Succeeded"


def test_a_command_gives_up_after_repeated_conflicts(
    ledger: JobLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)
    ledger.report_progress(job_id, 10, "", WORKER)
    loads = 0

    def always_stale(jid: UUID) -> Job:
        nonlocal loads
        loads += 1
        history = ledger.job_history(jid)[:2]
        job = None
        for event in history:
            job = event.mutate(job)
        assert isinstance(job, Job)
        return job

    monkeypatch.setattr(ledger, "get_job", always_stale)

    with pytest.raises(IntegrityError):
        ledger.report_progress(job_id, 20, "", WORKER)

    assert loads == CONFLICT_RETRIES + 1
    assert len(ledger.job_history(job_id)) == 3


def test_cancelling_a_job_whose_cancel_is_already_requested_records_nothing(
    ledger: JobLedger,
) -> None:
    job_id = uuid4()
    submit(ledger, job_id)
    ledger.start_job(job_id, 1, "w", WORKER)
    first = ledger.cancel_job(job_id, ORIGIN)

    second = ledger.cancel_job(job_id, ORIGIN)

    assert first.position > 0
    assert second.position == 0
    assert second.job.cancel_requested is True
    assert kinds(ledger.job_history(job_id))[-1] == "CancelRequested"
    assert len(ledger.job_history(job_id)) == 3
