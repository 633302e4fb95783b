"""Checking a recorded history against the state machine (domain/history.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from domain.history import problems
from domain.job import Job
from domain.origin import Origin

W = Origin("w1")
LATER = datetime(2030, 1, 1, tzinfo=UTC)


def job(max_attempts: int = 2) -> Job:
    return Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="segment",
        params={},
        pool="default",
        max_attempts=max_attempts,
        origin=Origin("alice"),
    )


def copy_of(event: Any, **changes: Any) -> Any:
    fields = {**vars(event), **changes}
    clone = object.__new__(type(event))
    clone.__dict__.update(fields)
    return clone


def test_every_path_the_aggregate_takes_is_valid() -> None:
    j = job()
    j.start(1, "w1", W)
    j.report_progress(50, "half", W)
    j.fail_attempt("flaky", retry_at=LATER, retryable=True, origin=W)
    j.start(2, "w2", W)
    j.interrupt("stopping", retry_at=LATER, origin=W, attempt=2)
    j.start(3, "w1", W)
    j.fail_attempt("boom", retry_at=None, retryable=False, origin=W)
    j.retry(Origin("operator"))
    j.start(4, "w1", W)
    j.cancel(Origin("alice"))
    j.confirm_cancelled(W)
    assert problems(j.collect_events()) == []


def test_a_second_outcome_of_one_attempt_is_named() -> None:
    j = job()
    j.start(1, "w1", W)
    j.succeed({}, W)
    events = j.collect_events()
    again = copy_of(events[-1], originator_version=4)

    assert problems([*events, again]) == ["event 4 (Succeeded): after succeeded"]


def test_a_start_that_skips_an_attempt_or_repeats_one_is_named() -> None:
    j = job()
    j.start(1, "w1", W)
    events = j.collect_events()
    twice = copy_of(events[-1])
    skipping = copy_of(events[-1], attempt=3)

    assert problems([*events, twice]) == ["event 3 (Started): after running"]
    assert problems([events[0], skipping]) == [
        "event 2 (Started): attempt 3 started after attempt 0"
    ]


def test_a_history_that_does_not_begin_with_its_submission_is_named() -> None:
    j = job()
    j.start(1, "w1", W)
    assert problems(j.collect_events()[1:]) == ["does not begin with Submitted"]


def scheduled(in_s: float) -> Job:
    return Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="segment",
        params={},
        pool="default",
        max_attempts=2,
        origin=Origin("alice"),
        run_at=datetime.now(UTC) + timedelta(seconds=in_s),
    )


def test_the_paths_of_a_scheduled_job_are_valid() -> None:
    held = scheduled(3600)
    assert held.hand_over(60, W, datetime.now(UTC) + timedelta(seconds=3590))
    held.cancel(Origin("alice"))
    started = scheduled(0.001)
    while started.due_in_s() > 0:
        pass
    started.start(1, "w1", W)
    started.succeed({}, W)
    assert problems(held.collect_events()) == []
    assert problems(started.collect_events()) == []


def test_a_scheduled_job_started_before_its_run_at_or_handed_over_twice_is_named() -> None:
    j = scheduled(3600)
    assert j.hand_over(60, W, datetime.now(UTC) + timedelta(seconds=3590))
    submitted, handed = j.collect_events()
    assert j.run_at is not None
    early = object.__new__(Job.Started)  # a start an hour early, as if recorded
    early.__dict__.update(
        {**vars(handed), "originator_version": 3, "attempt": 1, "worker_id": "w1"}
    )
    again = copy_of(handed, originator_version=3)

    [problem] = problems([submitted, handed, early])
    assert problem.startswith("event 3 (Started): started at") and "before its run_at" in problem
    assert problems([submitted, handed, again]) == ["event 3 (HandedOver): handed over twice"]
