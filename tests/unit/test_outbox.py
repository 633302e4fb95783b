"""The outbox: which messages each event calls for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from application.outbox import DISPATCHED, BroadcastCancel, Send, messages_for
from domain.job import Job
from domain.origin import Origin

NOW = datetime(2030, 1, 1, tzinfo=UTC)
RANGE_S = 63  # six delay levels
WORKER = Origin("w1", "corr-1", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")


def job(max_attempts: int = 3) -> Job:
    return Job.submit(
        job_id=uuid4(),
        tenant="t1",
        case_id="c1",
        job_type="segment",
        params={"scan_id": "s"},
        pool="gpu",
        max_attempts=max_attempts,
        origin=Origin("alice", "corr-1"),
    )


def last(j: Job) -> Any:
    return j.collect_events()[-1]


def test_a_submission_is_sent_at_once_as_attempt_one_of_its_pool() -> None:
    j = job()
    [message] = messages_for(last(j), NOW, range_s=RANGE_S)
    assert isinstance(message, Send) and message.delay_s == 0
    d = message.delivery
    assert (d.job_id, d.attempt, d.pool, d.tenant, d.correlation_id) == (
        j.id,
        1,
        "gpu",
        "t1",
        "corr-1",
    )


def test_a_failed_attempt_with_a_retry_is_sent_when_it_is_due() -> None:
    j = job()
    j.collect_events()
    j.start(1, "w1", WORKER)
    j.fail_attempt("boom", retry_at=NOW + timedelta(seconds=30), retryable=True, origin=WORKER)

    [message] = messages_for(j.collect_events()[-1], NOW, range_s=RANGE_S)

    assert isinstance(message, Send)
    assert (message.delivery.attempt, message.delay_s) == (2, 30)
    assert message.delivery.traceparent == WORKER.traceparent


def test_a_retry_that_is_already_due_is_sent_at_once() -> None:
    j = job()
    j.start(1, "w1", WORKER)
    j.interrupt("stopping", retry_at=NOW - timedelta(seconds=5), origin=WORKER, attempt=1)
    [message] = messages_for(j.collect_events()[-1], NOW, range_s=RANGE_S)
    assert isinstance(message, Send) and message.delay_s == 0 and message.delivery.attempt == 2


def test_a_cancel_of_a_running_job_is_broadcast() -> None:
    j = job()
    j.start(1, "w1", WORKER)
    j.cancel(Origin("alice"))
    assert messages_for(j.collect_events()[-1], NOW, range_s=RANGE_S) == [BroadcastCancel(j.id)]


def test_every_send_is_a_new_copy_with_its_own_delivery_id() -> None:
    event = last(job())
    first, second = (
        messages_for(event, NOW, range_s=RANGE_S),
        messages_for(event, NOW, range_s=RANGE_S),
    )
    assert isinstance(first[0], Send) and isinstance(second[0], Send)
    assert first[0].delivery.delivery_id != second[0].delivery.delivery_id


def test_events_outside_the_dispatched_set_call_for_nothing() -> None:
    j = job()
    j.start(1, "w1", WORKER)
    j.report_progress(50, "half", WORKER)
    j.succeed({}, WORKER)
    events = j.collect_events()
    assert all(not isinstance(e, DISPATCHED) for e in events[1:])
    assert [messages_for(e, NOW, range_s=RANGE_S) for e in events[1:]] == [[], [], []]
