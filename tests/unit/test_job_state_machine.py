"""The Job aggregate's state machine: what each command records, and what it refuses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from domain.errors import InvalidProgress, InvalidTransition, LedgerError, StaleDelivery
from domain.job import STARTABLE, TERMINAL, Job, Status
from domain.origin import Origin

ORIGIN = Origin(
    actor="alice",
    correlation_id="corr-submit",
    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
)
WORKER = Origin(
    actor="worker-7",
    correlation_id="corr-worker",
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
)
RETRY_AT = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)


def submitted(
    max_attempts: int = 3, job_id: UUID | None = None, run_at: datetime | None = None
) -> Job:
    return Job.submit(
        job_id=job_id or uuid4(),
        tenant="tenant-1",
        case_id="case-1",
        job_type="segment",
        params={"scan_id": "s1"},
        pool="gpu",
        max_attempts=max_attempts,
        origin=ORIGIN,
        run_at=run_at,
    )


def job_in(status: Status, max_attempts: int = 3) -> Job:
    """A fresh job driven into ``status``, with its events so far collected. A
    scheduled one is due: its run_at has passed."""
    if status is Status.SCHEDULED:
        job = submitted(max_attempts, run_at=datetime.now(UTC) + timedelta(hours=1))
        job.run_at = datetime.now(UTC) - timedelta(seconds=1)  # as if an hour had passed
    else:
        job = submitted(max_attempts)
    if status not in (Status.QUEUED, Status.SCHEDULED):
        job.start(1, "w1", WORKER)
        if status is Status.RETRY_SCHEDULED:
            job.fail_attempt("boom", retry_at=RETRY_AT, retryable=True, origin=WORKER)
        elif status is Status.SUCCEEDED:
            job.succeed({"ok": True}, WORKER)
        elif status is Status.FAILED:
            job.fail_attempt("boom", retry_at=None, retryable=False, origin=WORKER)
        elif status is Status.CANCELLED:
            job.cancel(ORIGIN)
            job.confirm_cancelled(WORKER)
    assert job.status is status
    job.collect_events()
    return job


def names(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- allowed transitions --------------------------------------------------------------


def test_submitting_a_job_records_submitted_and_queues_it() -> None:
    job_id = uuid4()
    job = submitted(max_attempts=4, job_id=job_id)

    events = job.collect_events()

    assert names(events) == ["Submitted"]
    assert job.id == job_id
    assert job.status is Status.QUEUED
    assert job.attempt == 0
    assert job.attempts_allowed == 4
    assert job.attempts_left == 4
    assert job.params == {"scan_id": "s1"}
    assert job.pool == "gpu"
    assert job.submitted_by == "alice"
    assert job.submitted_at == events[0].timestamp
    assert job.progress == 0
    assert job.result is None
    assert job.error is None
    assert job.cancel_requested is False


def test_starting_a_queued_job_runs_its_first_attempt() -> None:
    job = job_in(Status.QUEUED)

    job.start(1, "worker-a", WORKER)

    events = job.collect_events()
    assert names(events) == ["Started"]
    assert events[0].attempt == 1
    assert events[0].worker_id == "worker-a"
    assert job.status is Status.RUNNING
    assert job.attempt == 1
    assert job.worker_id == "worker-a"
    assert job.started_at == events[0].timestamp
    assert job.finished_at is None


def test_starting_a_retry_scheduled_job_runs_the_next_attempt_afresh() -> None:
    job = job_in(Status.RETRY_SCHEDULED)
    assert job.error == "boom"

    job.start(2, "worker-b", WORKER)

    events = job.collect_events()
    assert names(events) == ["Started"]
    assert job.status is Status.RUNNING
    assert job.attempt == 2
    assert job.worker_id == "worker-b"
    assert job.error is None
    assert job.progress == 0
    assert job.progress_message == ""


@pytest.mark.parametrize("status", sorted(STARTABLE))
@pytest.mark.parametrize("offset", [-1, 0, 2, 5])
def test_starting_with_an_attempt_that_is_not_the_next_one_is_a_stale_delivery(
    status: Status, offset: int
) -> None:
    job = job_in(status)
    attempt_before = job.attempt

    with pytest.raises(StaleDelivery):
        job.start(attempt_before + offset, "w", WORKER)

    assert job.collect_events() == []
    assert job.status is status
    assert job.attempt == attempt_before


def test_reporting_progress_on_a_running_job_records_percent_and_message() -> None:
    job = job_in(Status.RUNNING)

    job.report_progress(0, "begin", WORKER)
    job.report_progress(42, "denoise", WORKER)
    job.report_progress(100, "done", WORKER)

    events = job.collect_events()
    assert names(events) == ["ProgressReported"] * 3
    assert [(e.percent, e.message) for e in events] == [
        (0, "begin"),
        (42, "denoise"),
        (100, "done"),
    ]
    assert job.status is Status.RUNNING
    assert (job.progress, job.progress_message) == (100, "done")


@pytest.mark.parametrize("percent", [-1, 101, -100, 1000])
def test_reporting_progress_outside_0_to_100_is_rejected(percent: int) -> None:
    job = job_in(Status.RUNNING)
    job.report_progress(10, "ten", WORKER)
    job.collect_events()

    with pytest.raises(InvalidProgress):
        job.report_progress(percent, "bad", WORKER)

    assert job.collect_events() == []
    assert (job.progress, job.progress_message) == (10, "ten")


def test_succeeding_a_running_job_records_the_result_and_full_progress() -> None:
    job = job_in(Status.RUNNING)
    job.report_progress(30, "working", WORKER)
    job.collect_events()

    job.succeed({"mask_id": "abc"}, WORKER)

    events = job.collect_events()
    assert names(events) == ["Succeeded"]
    assert job.status is Status.SUCCEEDED
    assert job.result == {"mask_id": "abc"}
    assert job.progress == 100
    assert job.finished_at == events[0].timestamp


def test_failing_an_attempt_with_a_retry_time_and_attempts_left_schedules_a_retry() -> None:
    job = job_in(Status.RUNNING, max_attempts=3)

    job.fail_attempt("timeout", retry_at=RETRY_AT, retryable=True, origin=WORKER)

    events = job.collect_events()
    assert names(events) == ["AttemptFailed"]
    assert events[0].error == "timeout"
    assert events[0].retryable is True
    assert events[0].retry_at == RETRY_AT
    assert job.status is Status.RETRY_SCHEDULED
    assert job.error == "timeout"
    assert job.retry_at == RETRY_AT
    assert job.attempts_left == 2
    assert job.finished_at is None


def test_failing_an_attempt_without_a_retry_time_fails_the_job() -> None:
    job = job_in(Status.RUNNING, max_attempts=3)

    job.fail_attempt("bad input", retry_at=None, retryable=False, origin=WORKER)

    events = job.collect_events()
    assert names(events) == ["AttemptFailed", "Failed"]
    assert events[0].retry_at is None
    assert events[0].retryable is False
    assert events[1].error == "bad input"
    assert job.status is Status.FAILED
    assert job.error == "bad input"
    assert job.finished_at == events[1].timestamp


def test_failing_the_last_allowed_attempt_fails_the_job_even_with_a_retry_time() -> None:
    job = job_in(Status.RUNNING, max_attempts=2)
    job.fail_attempt("first", retry_at=RETRY_AT, retryable=True, origin=WORKER)
    job.start(2, "w2", WORKER)
    job.collect_events()
    assert job.attempt == job.attempts_allowed == 2

    job.fail_attempt("second", retry_at=RETRY_AT, retryable=True, origin=WORKER)

    events = job.collect_events()
    assert names(events) == ["AttemptFailed", "Failed"]
    assert events[0].retry_at is None
    assert job.status is Status.FAILED
    assert job.retry_at is None
    assert job.error == "second"
    assert job.attempts_left == 0


def test_a_single_attempt_job_fails_at_once_even_with_a_retry_time() -> None:
    job = job_in(Status.RUNNING, max_attempts=1)

    job.fail_attempt("boom", retry_at=RETRY_AT, retryable=True, origin=WORKER)

    assert names(job.collect_events()) == ["AttemptFailed", "Failed"]
    assert job.status is Status.FAILED


@pytest.mark.parametrize("status", sorted(STARTABLE))
def test_cancelling_a_job_that_is_not_running_cancels_it_at_once(status: Status) -> None:
    job = job_in(status)

    job.cancel(ORIGIN)

    events = job.collect_events()
    assert names(events) == ["Cancelled"]
    assert job.status is Status.CANCELLED
    assert job.finished_at == events[0].timestamp


def test_cancelling_a_running_job_only_requests_the_cancel() -> None:
    job = job_in(Status.RUNNING)

    job.cancel(ORIGIN)

    assert names(job.collect_events()) == ["CancelRequested"]
    assert job.status is Status.RUNNING
    assert job.cancel_requested is True


def test_cancelling_a_running_job_twice_records_the_request_once() -> None:
    job = job_in(Status.RUNNING)
    job.cancel(ORIGIN)
    job.collect_events()

    job.cancel(ORIGIN)

    assert job.collect_events() == []
    assert job.status is Status.RUNNING
    assert job.cancel_requested is True


def test_confirming_the_cancel_of_a_running_job_cancels_it() -> None:
    job = job_in(Status.RUNNING)
    job.cancel(ORIGIN)
    job.collect_events()

    job.confirm_cancelled(WORKER)

    events = job.collect_events()
    assert names(events) == ["Cancelled"]
    assert job.status is Status.CANCELLED
    assert job.finished_at == events[0].timestamp


@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED])
def test_retrying_a_failed_or_cancelled_job_queues_it_with_fresh_attempts(status: Status) -> None:
    job = job_in(status, max_attempts=3)
    attempt = job.attempt

    job.retry(ORIGIN)

    events = job.collect_events()
    assert names(events) == ["RetryRequested"]
    assert job.status is Status.QUEUED
    assert job.attempt == attempt
    assert job.attempts_allowed == attempt + 3
    assert job.attempts_left == 3
    assert job.cancel_requested is False
    assert job.retry_at is None
    # The retried job starts at the next attempt number.
    job.start(attempt + 1, "w", WORKER)
    assert job.status is Status.RUNNING


def test_a_retried_job_gets_max_attempts_more_attempts_before_failing_for_good() -> None:
    job = job_in(Status.RUNNING, max_attempts=2)
    job.fail_attempt("1", retry_at=RETRY_AT, retryable=True, origin=WORKER)
    job.start(2, "w", WORKER)
    job.fail_attempt("2", retry_at=RETRY_AT, retryable=True, origin=WORKER)
    assert job.status is Status.FAILED

    job.retry(ORIGIN)
    assert job.attempts_allowed == 4
    job.start(3, "w", WORKER)
    job.fail_attempt("3", retry_at=RETRY_AT, retryable=True, origin=WORKER)
    assert job.status is Status.RETRY_SCHEDULED
    job.start(4, "w", WORKER)
    job.fail_attempt("4", retry_at=RETRY_AT, retryable=True, origin=WORKER)
    assert job.status is Status.FAILED


# -- the full transition table --------------------------------------------------------

Command = Callable[[Job], None]

COMMANDS: dict[str, Command] = {
    "start": lambda job: job.start(job.attempt + 1, "w", WORKER),
    "report_progress": lambda job: job.report_progress(50, "half", WORKER),
    "succeed": lambda job: job.succeed({"ok": 1}, WORKER),
    "fail_with_retry": lambda job: job.fail_attempt(
        "e", retry_at=RETRY_AT, retryable=True, origin=WORKER
    ),
    "fail_for_good": lambda job: job.fail_attempt(
        "e", retry_at=None, retryable=False, origin=WORKER
    ),
    "cancel": lambda job: job.cancel(ORIGIN),
    "confirm_cancelled": lambda job: job.confirm_cancelled(WORKER),
    "retry": lambda job: job.retry(ORIGIN),
}

RUNNING_COMMANDS = {
    "report_progress",
    "succeed",
    "fail_with_retry",
    "fail_for_good",
    "cancel",
    "confirm_cancelled",
}
ALLOWED: dict[Status, set[str]] = {
    Status.SCHEDULED: {"start", "cancel"},
    Status.QUEUED: {"start", "cancel"},
    Status.RETRY_SCHEDULED: {"start", "cancel"},
    Status.RUNNING: RUNNING_COMMANDS,
    Status.SUCCEEDED: set(),
    Status.FAILED: {"retry"},
    Status.CANCELLED: {"retry"},
}
# Where each allowed command leads.
EXPECTED_STATUS: dict[tuple[Status, str], Status] = {
    (Status.SCHEDULED, "start"): Status.RUNNING,
    (Status.SCHEDULED, "cancel"): Status.CANCELLED,
    (Status.QUEUED, "start"): Status.RUNNING,
    (Status.QUEUED, "cancel"): Status.CANCELLED,
    (Status.RETRY_SCHEDULED, "start"): Status.RUNNING,
    (Status.RETRY_SCHEDULED, "cancel"): Status.CANCELLED,
    (Status.RUNNING, "report_progress"): Status.RUNNING,
    (Status.RUNNING, "succeed"): Status.SUCCEEDED,
    (Status.RUNNING, "fail_with_retry"): Status.RETRY_SCHEDULED,
    (Status.RUNNING, "fail_for_good"): Status.FAILED,
    (Status.RUNNING, "cancel"): Status.RUNNING,
    (Status.RUNNING, "confirm_cancelled"): Status.CANCELLED,
    (Status.FAILED, "retry"): Status.QUEUED,
    (Status.CANCELLED, "retry"): Status.QUEUED,
}

TABLE = [(status, command) for status in Status for command in COMMANDS]
ALLOWED_CASES = [(s, c) for s, c in TABLE if c in ALLOWED[s]]
FORBIDDEN_CASES = [(s, c) for s, c in TABLE if c not in ALLOWED[s]]


def test_the_transition_table_covers_every_status_and_command() -> None:
    assert set(ALLOWED) == set(Status)
    assert len(TABLE) == len(Status) * len(COMMANDS)
    assert set(EXPECTED_STATUS) == set(ALLOWED_CASES)
    # Only retry leaves a terminal status.
    assert all(ALLOWED[s] <= {"retry"} for s in TERMINAL)


@pytest.mark.parametrize(
    ("status", "command"),
    ALLOWED_CASES,
    ids=[f"{c}-on-a-{s.value}-job-is-allowed" for s, c in ALLOWED_CASES],
)
def test_every_allowed_transition_succeeds(status: Status, command: str) -> None:
    job = job_in(status)
    if command == "confirm_cancelled":
        job.cancel(ORIGIN)  # a worker confirms only a cancel someone asked for

    COMMANDS[command](job)

    assert job.status is EXPECTED_STATUS[status, command]
    assert len(job.collect_events()) >= 1


@pytest.mark.parametrize(
    ("status", "command"),
    FORBIDDEN_CASES,
    ids=[f"{c}-on-a-{s.value}-job-is-rejected" for s, c in FORBIDDEN_CASES],
)
def test_every_forbidden_transition_is_rejected_and_records_nothing(
    status: Status, command: str
) -> None:
    job = job_in(status)
    before = (job.status, job.attempt, job.version, job.progress, job.error, job.result)

    with pytest.raises(InvalidTransition) as raised:
        COMMANDS[command](job)

    if command == "start":
        assert isinstance(raised.value, StaleDelivery)
    assert raised.value.status == status
    assert status.value in str(raised.value)
    assert job.collect_events() == []
    assert (job.status, job.attempt, job.version, job.progress, job.error, job.result) == before


def test_cancelling_a_completed_job_is_rejected() -> None:
    job = job_in(Status.SUCCEEDED)

    with pytest.raises(InvalidTransition, match="cannot cancel a job that is succeeded"):
        job.cancel(ORIGIN)

    assert job.status is Status.SUCCEEDED


def test_retrying_a_completed_job_is_rejected() -> None:
    job = job_in(Status.SUCCEEDED)

    with pytest.raises(InvalidTransition, match="cannot retry a job that is succeeded"):
        job.retry(ORIGIN)


def test_starting_a_running_job_again_is_a_stale_delivery() -> None:
    job = job_in(Status.RUNNING)

    with pytest.raises(StaleDelivery):
        job.start(2, "other-worker", WORKER)

    assert job.worker_id == "w1"


def test_reporting_progress_on_a_queued_job_is_rejected_before_the_percent_is_checked() -> None:
    job = job_in(Status.QUEUED)

    with pytest.raises(InvalidTransition):
        job.report_progress(500, "bad", WORKER)


def test_errors_of_the_state_machine_are_ledger_errors() -> None:
    assert issubclass(StaleDelivery, InvalidTransition)
    assert issubclass(InvalidTransition, LedgerError)
    assert issubclass(InvalidProgress, LedgerError)


# -- the envelope every event carries -------------------------------------------------


def test_every_event_carries_the_envelope_from_its_job_and_its_origin() -> None:
    job_id = uuid4()
    before = datetime.now(UTC) - timedelta(seconds=1)
    o = [
        Origin(actor=f"actor-{i}", correlation_id=f"corr-{i}", traceparent=f"tp-{i}")
        for i in range(12)
    ]
    job = Job.submit(
        job_id=job_id,
        tenant="tenant-9",
        case_id="case-9",
        job_type="process",
        params={},
        pool="cpu",
        max_attempts=2,
        origin=o[0],
    )
    # (command, the attempt its events carry, the origin they carry)
    steps: list[tuple[Callable[[], None], int, Origin]] = [
        (lambda: job.start(1, "w1", o[1]), 1, o[1]),
        (lambda: job.report_progress(10, "a", o[2]), 1, o[2]),
        (lambda: job.report_progress(20, "b", o[3]), 1, o[3]),
        (lambda: job.fail_attempt("x", retry_at=RETRY_AT, retryable=True, origin=o[4]), 1, o[4]),
        (lambda: job.start(2, "w2", o[5]), 2, o[5]),
        (lambda: job.fail_attempt("y", retry_at=None, retryable=False, origin=o[6]), 2, o[6]),
        (lambda: job.retry(o[7]), 2, o[7]),
        (lambda: job.start(3, "w3", o[8]), 3, o[8]),
        (lambda: job.cancel(o[9]), 3, o[9]),
        (lambda: job.confirm_cancelled(o[10]), 3, o[10]),
        (lambda: job.retry(o[11]), 3, o[11]),
    ]
    expected = [(o[0], 0)]
    for command, attempt, origin in steps:
        n_before = len(job.pending_events)
        command()
        expected.extend([(origin, attempt)] * (len(job.pending_events) - n_before))
    events = job.collect_events()

    assert names(events) == [
        "Submitted",
        "Started",
        "ProgressReported",
        "ProgressReported",
        "AttemptFailed",
        "Started",
        "AttemptFailed",
        "Failed",
        "RetryRequested",
        "Started",
        "CancelRequested",
        "Cancelled",
        "RetryRequested",
    ]
    after = datetime.now(UTC) + timedelta(seconds=1)
    for version, (event, (origin, attempt)) in enumerate(zip(events, expected, strict=True), 1):
        kind = type(event).__name__
        assert event.originator_id == job_id
        assert event.originator_version == version
        assert event.tenant == "tenant-9"
        assert event.case_id == "case-9"
        assert event.job_type == "process"
        assert event.pool == "cpu"
        assert event.attempt == attempt, kind
        assert event.actor == origin.actor, kind
        assert event.correlation_id == origin.correlation_id, kind
        assert event.traceparent == origin.traceparent, kind
        assert isinstance(event.timestamp, datetime)
        assert event.timestamp.tzinfo is not None
        assert before <= event.timestamp <= after
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)


def test_an_origin_without_a_correlation_id_inherits_the_jobs() -> None:
    job = submitted()
    job.collect_events()

    job.start(1, "w", Origin(actor="worker-1", correlation_id="", traceparent="tp"))

    (event,) = job.collect_events()
    assert event.correlation_id == "corr-submit"
    assert event.actor == "worker-1"
    assert event.traceparent == "tp"


def test_every_event_of_a_job_is_a_job_event() -> None:
    job = job_in(Status.RUNNING)
    job.report_progress(1, "", WORKER)
    job.succeed({}, WORKER)

    for event in job.collect_events():
        assert isinstance(event, Job.Event)


def test_confirming_a_cancel_nobody_requested_is_rejected() -> None:
    job = job_in(Status.RUNNING)

    with pytest.raises(InvalidTransition):
        job.confirm_cancelled(WORKER)

    assert job.status is Status.RUNNING and job.collect_events() == []


def test_a_cancel_requested_while_running_wins_over_another_attempt() -> None:
    job = job_in(Status.RUNNING)
    job.cancel(ORIGIN)

    job.fail_attempt("boom", retry_at=RETRY_AT, retryable=True, origin=WORKER)

    assert job.status is Status.CANCELLED
    assert names(job.collect_events()) == ["CancelRequested", "AttemptFailed", "Cancelled"]


def test_a_worker_cannot_record_the_outcome_of_an_attempt_that_was_superseded() -> None:
    job = job_in(Status.RUNNING)

    with pytest.raises(StaleDelivery):
        job.succeed({"late": True}, WORKER, attempt=job.attempt - 1)

    job.succeed({"on time": True}, WORKER, attempt=job.attempt)
    assert job.status is Status.SUCCEEDED


def test_a_job_without_attempts_is_refused() -> None:
    with pytest.raises(LedgerError):
        submitted(max_attempts=0)


def test_a_copy_changes_apart_from_the_job_it_was_taken_from() -> None:
    """The repository hands commands copies of its cached jobs: whatever the copy goes
    through, the cached job is as it was."""
    cached = submitted()
    cached.collect_events()
    before = copy.copy(cached.__dict__)

    changed = copy.deepcopy(cached)
    assert changed == cached and changed is not cached
    changed.start(1, "worker-7", WORKER, "d-1")
    changed.report_progress(40, "half", WORKER, attempt=1)
    changed.succeed({"mask": "m1"}, WORKER, attempt=1)

    assert [type(e).__name__ for e in changed.collect_events()] == [
        "Started",
        "ProgressReported",
        "Succeeded",
    ]
    assert cached.collect_events() == []
    assert cached.__dict__ == before
    assert (cached.status, cached.attempt, cached.version) == (Status.QUEUED, 0, 1)
    assert (changed.status, changed.result, changed.version) == (
        Status.SUCCEEDED,
        {"mask": "m1"},
        4,
    )
