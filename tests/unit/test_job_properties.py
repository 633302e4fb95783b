"""Properties of the Job aggregate under random sequences of commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import Tracking
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import LedgerError
from domain.job import STARTABLE, TERMINAL, Job, Status, status_after
from domain.ledger import JobLedger
from domain.origin import Origin
from gateway.stream import to_stream_event
from projections.memory import MemoryJobView
from projections.projection import JobProjection

ORIGIN = Origin(actor="prop", correlation_id="corr", traceparent="tp")
NOW = datetime(2030, 1, 1, tzinfo=UTC)
LEDGER = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

# An attempt number for start: None means "the next one", else a raw (maybe stale) number.
attempts = st.one_of(st.none(), st.integers(min_value=-1, max_value=8))
retry_times = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(2020, 1, 1),
        max_value=datetime(2040, 1, 1),
        timezones=st.just(UTC),
    ),
)
commands = st.one_of(
    st.tuples(st.just("start"), attempts, st.text(max_size=4)),
    st.tuples(st.just("progress"), st.integers(min_value=-50, max_value=150), st.text(max_size=4)),
    st.tuples(
        st.just("succeed"),
        st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=2),
    ),
    st.tuples(st.just("fail"), st.text(max_size=6), retry_times, st.booleans()),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("confirm_cancelled")),
    st.tuples(st.just("retry")),
    st.tuples(st.just("interrupt"), retry_times),
)


def apply(job: Job, command: tuple[Any, ...]) -> None:
    match command:
        case ("start", attempt, worker):
            job.start(job.attempt + 1 if attempt is None else attempt, worker, ORIGIN)
        case ("progress", percent, message):
            job.report_progress(percent, message, ORIGIN)
        case ("succeed", result):
            job.succeed(result, ORIGIN)
        case ("fail", error, retry_at, retryable):
            job.fail_attempt(error, retry_at=retry_at, retryable=retryable, origin=ORIGIN)
        case ("cancel",):
            job.cancel(ORIGIN)
        case ("confirm_cancelled",):
            job.confirm_cancelled(ORIGIN)
        case ("retry",):
            job.retry(ORIGIN)
        case ("interrupt", retry_at):
            job.interrupt("stopping", retry_at=retry_at or NOW, origin=ORIGIN, attempt=job.attempt)
        case _:
            raise AssertionError(command)


def state(job: Job) -> tuple[Any, ...]:
    return (
        job.status,
        job.attempt,
        job.attempts_allowed,
        job.progress,
        job.progress_message,
        job.error,
        job.result,
        job.retry_at,
        job.cancel_requested,
        job.worker_id,
        job.started_at,
        job.finished_at,
        job.version,
    )


@settings(max_examples=200, deadline=None, database=None)
@given(
    max_attempts=st.integers(min_value=1, max_value=4),
    script=st.lists(commands, max_size=30),
)
def test_random_command_sequences_keep_the_job_consistent(
    max_attempts: int, script: list[tuple[Any, ...]]
) -> None:
    job = Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="segment",
        params={"n": 1},
        pool="default",
        max_attempts=max_attempts,
        origin=ORIGIN,
    )
    events = list(job.collect_events())

    for command in script:
        before = state(job)
        status_before, attempt_before = job.status, job.attempt
        try:
            apply(job, command)
        except LedgerError:
            # A refused command changes nothing and records nothing.
            assert job.pending_events == []
            assert state(job) == before
            continue
        new = job.collect_events()
        events.extend(new)

        assert isinstance(job.status, Status)
        if status_before in TERMINAL:
            # The only way out of a terminal status is a retry, which queues the job.
            assert command[0] == "retry"
            assert job.status is Status.QUEUED
        if command[0] == "retry":
            assert status_before in {Status.FAILED, Status.CANCELLED}
        assert job.attempt >= attempt_before
        if command[0] == "start":
            assert status_before in STARTABLE
            assert job.attempt == attempt_before + 1
        else:
            assert job.attempt == attempt_before
        if job.status is Status.RUNNING:
            assert 1 <= job.attempt <= job.attempts_allowed
        # One rule for the status an event leaves a job in, whoever folds the history.
        if new:
            assert status_after(new[-1]) is job.status
        assert 0 <= job.progress <= 100
        assert job.version == len(events)

    # Replaying the events rebuilds the same job.
    replayed: Any = None
    for event in events:
        replayed = event.mutate(replayed)
    assert isinstance(replayed, Job)
    assert state(replayed) == state(job)

    # The job view and the live streams fold the same history to the same status.
    view, projection = MemoryJobView(), JobProjection()
    for position, event in enumerate(events, start=1):
        view.apply(list(projection.changes(event, position)), Tracking("JobLedger", position))
        streamed = to_stream_event(event, position).frame.decode()
        assert f'"status":"{status_after(event).value}"' in streamed
    row = view.get(job.id)
    assert row is not None and row.status == job.status.value

    # So does saving them to a ledger and loading the job back.
    LEDGER.save(*events)
    loaded = LEDGER.get_job(job.id)
    assert state(loaded) == state(job)
    assert [type(e) for e in LEDGER.job_history(job.id)] == [type(e) for e in events]


@settings(max_examples=50, deadline=None, database=None)
@given(max_attempts=st.integers(min_value=1, max_value=6), failures=st.integers(0, 10))
def test_a_job_that_keeps_failing_gets_exactly_max_attempts_attempts(
    max_attempts: int, failures: int
) -> None:
    job = Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="segment",
        params={},
        pool="default",
        max_attempts=max_attempts,
        origin=ORIGIN,
    )
    retry_at = datetime.now(UTC) + timedelta(seconds=5)
    started = 0
    while job.status in STARTABLE and started < failures:
        job.start(job.attempt + 1, "w", ORIGIN)
        started += 1
        job.fail_attempt("boom", retry_at=retry_at, retryable=True, origin=ORIGIN)

    assert started == min(failures, max_attempts)
    if failures >= max_attempts:
        assert job.status is Status.FAILED
    else:
        assert job.status is (Status.RETRY_SCHEDULED if failures else Status.QUEUED)
