"""Checking a job's history against the state machine, after the fact.

The aggregate refuses an invalid command before it is recorded; this reads what was
recorded and says whether it could have happened: each event allowed by the status
the events before it left (the one ``status_after`` fold), attempts numbered one
after another, each attempt ended at most once, a scheduled job started no earlier
than its ``run_at`` and handed over at most once. It is what a chaos run and an
auditor check a ledger with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain.job import STARTABLE, Job, Status, status_after

# The events that end an attempt (an AttemptFailed that schedules no retry is ended
# by the Failed or Cancelled that follows it).
ENDS_AN_ATTEMPT = (Job.Succeeded, Job.AttemptInterrupted, Job.Failed, Job.Cancelled)


def problems(history: Sequence[Any]) -> list[str]:
    """What is wrong with a job's history (oldest event first); empty when nothing."""
    if not history or not isinstance(history[0], Job.Submitted):
        return ["does not begin with Submitted"]
    found: list[str] = []
    status, attempt, ended = status_after(history[0]), 0, set[int]()
    run_at, handed_over = history[0].run_at, False
    for n, event in enumerate(history[1:], start=2):
        problem = _refusal(event, status, attempt)
        if problem is None and status is Status.SCHEDULED:
            problem = _early_or_again(event, run_at, handed_over)
        if problem:
            found.append(f"event {n} ({type(event).__name__}): {problem}")
        handed_over = handed_over or isinstance(event, Job.HandedOver)
        if isinstance(event, Job.Started):
            attempt = event.attempt
        elif isinstance(event, ENDS_AN_ATTEMPT) and status is Status.RUNNING:
            if attempt in ended:
                found.append(f"event {n} ({type(event).__name__}): attempt {attempt} ended twice")
            ended.add(attempt)
        status = status_after(event)
    return found


# The statuses each event may follow; the rest may only follow a running job.
ALLOWED_AFTER: dict[type, frozenset[Status]] = {
    Job.Submitted: frozenset(),
    Job.Started: STARTABLE,
    Job.RetryRequested: frozenset({Status.FAILED, Status.CANCELLED}),
    Job.Cancelled: frozenset({*STARTABLE, Status.RUNNING}),
    Job.HandedOver: frozenset({Status.SCHEDULED}),
}


def _early_or_again(event: Any, run_at: Any, handed_over: bool) -> str | None:
    """What is wrong with ``event`` of a scheduled job: a start before its run_at, or a
    second hand-over."""
    if isinstance(event, Job.Started) and run_at is not None and event.timestamp < run_at:
        return f"started at {event.timestamp.isoformat()}, before its run_at {run_at.isoformat()}"
    if isinstance(event, Job.HandedOver) and handed_over:
        return "handed over twice"
    return None


def _refusal(event: Any, status: Status, attempt: int) -> str | None:
    """Why ``event`` could not follow a job in ``status`` at ``attempt`` (None: it could)."""
    if status not in ALLOWED_AFTER.get(type(event), frozenset({Status.RUNNING})):
        return f"after {status}" if not isinstance(event, Job.Submitted) else "a second Submitted"
    if isinstance(event, Job.Started):
        if event.attempt != attempt + 1:
            return f"attempt {event.attempt} started after attempt {attempt}"
    elif event.attempt != attempt:
        return f"names attempt {event.attempt} during attempt {attempt}"
    return None
