"""Lanes, in memory: the priority a job is submitted with, the lane the dispatcher
sends each delivery to (priority, retries, a tenant's share), the routing keys that
carry it there, and the order a worker starts what it holds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from pydantic import BaseModel

from application.lanes import LANES, Lane, LanePicker, TenantShares
from application.outbox import Send, messages_for, messages_shared_fairly
from application.submissions import Submission, Submissions
from consumers import JobContext, JobRegistry
from consumers.routing import Names
from domain.errors import InvalidPriority
from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ORIGIN = Origin("alice", "corr-1")
RANGE_S = 63  # six delay levels
WORKER = Origin("w1", "corr-1")

registry = JobRegistry()


class Scan(BaseModel):
    scan_id: str


@registry.job("urgent", priority="high")
async def urgent(ctx: JobContext, params: Scan) -> None:
    pass


@registry.job("plain")
async def plain(ctx: JobContext, params: Scan) -> None:
    pass


@pytest.fixture
def submissions() -> Submissions:
    ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return Submissions(ledger, registry, default_max_attempts=3)


def submit(s: Submissions, job_type: str, priority: str | None = None) -> Job:
    return s.submit(
        job_id=uuid4(),
        tenant="t1",
        case_id="c1",
        job_type=job_type,
        params={"scan_id": "s"},
        origin=ORIGIN,
        priority=priority,
    ).job


def submitted(
    tenant: str = "t1",
    priority: str = "normal",
    pool: str = "default",
    run_at: datetime | None = None,
) -> Any:
    job = Job.submit(
        job_id=uuid4(),
        tenant=tenant,
        case_id="c1",
        job_type="plain",
        params={},
        pool=pool,
        max_attempts=3,
        origin=ORIGIN,
        priority=priority,
        run_at=run_at,
    )
    return job, job.collect_events()[-1]


# The priority, in the ledger


def test_a_job_takes_its_types_priority_unless_the_submit_names_one(
    submissions: Submissions,
) -> None:
    assert submit(submissions, "urgent").priority == "high"
    assert submit(submissions, "plain").priority == "normal"
    assert submit(submissions, "urgent", "low").priority == "low"
    [batch] = submissions.submit_many(
        tenant="t1",
        submissions=[Submission("plain", "c1", {"scan_id": "s"}, priority="high")],
        origin=ORIGIN,
    )
    assert batch.job.priority == "high"


def test_a_priority_outside_high_normal_low_is_refused(submissions: Submissions) -> None:
    with pytest.raises(InvalidPriority, match="'urgent' is not one of high, normal, low"):
        submit(submissions, "plain", "urgent")
    with pytest.raises(ValueError, match="not one of"):
        registry.add(plain, name="other", priority="top")


def test_a_submission_stored_before_priorities_loads_as_normal(
    submissions: Submissions,
) -> None:
    ledger = submissions.ledger
    job = submit(submissions, "urgent")
    stored = ledger.recorder.select_events(job.id)[0]
    state = ledger.mapper.transcoder.decode(stored.state)
    assert state.pop("class_version") == 2
    del state["priority"], state["run_at"]  # the shape of version 1
    old = replace(stored, state=ledger.mapper.transcoder.encode(state))
    assert isinstance(old, StoredEvent)
    loaded = ledger.mapper.to_domain_event(old)
    assert isinstance(loaded, Job.Submitted) and loaded.priority == "normal"
    assert loaded.run_at is None


# The lane of each delivery


def test_a_first_delivery_goes_to_the_lane_of_its_priority() -> None:
    for priority, lane in (("high", Lane.HIGH), ("normal", Lane.NORMAL), ("low", Lane.LOW)):
        [message] = messages_for(submitted(priority=priority)[1], NOW, range_s=RANGE_S)
        assert isinstance(message, Send) and message.lane is lane


def test_a_delayed_job_goes_to_the_lane_of_its_priority_sent_or_handed_over() -> None:
    for run_in_s in (10, RANGE_S + 30):  # sent at submission; kept, then handed over
        job = Job.submit(
            job_id=uuid4(),
            tenant="t1",
            case_id="c1",
            job_type="plain",
            params={},
            pool="default",
            max_attempts=3,
            origin=ORIGIN,
            run_at=datetime.now(UTC) + timedelta(seconds=run_in_s),
            priority="high",
        )
        at = datetime.now(UTC) + timedelta(seconds=run_in_s - 10)
        job.hand_over(RANGE_S, ORIGIN, at)
        sends = [m for e in job.collect_events() for m in messages_for(e, at, range_s=RANGE_S)]
        assert [m.lane for m in sends if isinstance(m, Send)] == [Lane.HIGH]


def test_due_retries_interrupted_attempts_and_redrives_go_to_the_retry_lane() -> None:
    job, _ = submitted(priority="low")
    job.start(1, "w1", WORKER)
    job.fail_attempt("boom", retry_at=NOW + timedelta(seconds=3), retryable=True, origin=WORKER)
    job.start(2, "w1", WORKER)
    job.interrupt("stopping", retry_at=NOW, origin=WORKER, attempt=2)
    job.start(3, "w1", WORKER)
    job.fail_attempt("boom", retry_at=None, retryable=False, origin=WORKER)
    job.retry(ORIGIN)
    sends = [m for e in job.collect_events() for m in messages_for(e, NOW, range_s=RANGE_S)]
    assert [(m.delivery.attempt, m.lane) for m in sends if isinstance(m, Send)] == [
        (2, Lane.RETRY),
        (3, Lane.RETRY),
        (4, Lane.RETRY),
    ]


def lanes_of(
    events: list[Any], shares: TenantShares, now: datetime = NOW
) -> list[tuple[str, Lane]]:
    return [
        (m.delivery.tenant, m.lane)
        for e in events
        for m in messages_shared_fairly(e, now, shares, range_s=RANGE_S)
        if isinstance(m, Send)
    ]


def test_a_tenant_beyond_its_share_of_waiting_deliveries_goes_to_the_bulk_lane() -> None:
    shares = TenantShares(share=2)
    a = [submitted("a") for _ in range(4)]
    b = submitted("b")
    routed = lanes_of([e for _, e in a] + [b[1]], shares)
    assert routed == [
        ("a", Lane.NORMAL),
        ("a", Lane.NORMAL),
        ("a", Lane.BULK),
        ("a", Lane.BULK),
        ("b", Lane.NORMAL),  # another tenant's first job goes ahead of a's backlog
    ]
    # Once a's waiting ones start (or are cancelled), a is back within its share.
    a[0][0].start(1, "w1", WORKER)
    a[1][0].cancel(ORIGIN)
    a[2][0].start(1, "w1", WORKER)
    ended = [e for j, _ in a[:3] for e in j.collect_events()]
    assert lanes_of([*ended, submitted("a")[1], submitted("a")[1]], shares) == [
        ("a", Lane.NORMAL),
        ("a", Lane.BULK),
    ]


def test_a_share_is_counted_per_pool_and_priority_and_a_delivery_sent_again_counts_once() -> None:
    shares = TenantShares(share=1)
    _, first = submitted("a", pool="gpu")
    assert lanes_of([first, first], shares) == [("a", Lane.NORMAL), ("a", Lane.NORMAL)]
    assert lanes_of([submitted("a", pool="cpu")[1]], shares) == [("a", Lane.NORMAL)]
    # the tenant's own high job keeps its lane, whatever its normal backlog
    assert lanes_of([submitted("a", "high", pool="gpu")[1]], shares) == [("a", Lane.HIGH)]
    assert lanes_of([submitted("a", pool="gpu")[1]], shares) == [("a", Lane.BULK)]


def delayed(tenant: str, seconds: float, now: datetime) -> Any:
    return submitted(tenant, run_at=now + timedelta(seconds=seconds))[1]


def test_a_delayed_first_delivery_counts_in_its_tenants_share_from_when_it_is_due() -> None:
    now = datetime.now(UTC)  # a delay is sent as such only within the delay queues' range
    shares = TenantShares(share=2)
    # Three jobs due in a minute: the tenant's jobs of now are not held behind them...
    later = [delayed("a", 60, now) for _ in range(3)]
    assert lanes_of([*later, submitted("a")[1], submitted("a")[1]], shares, now) == [
        ("a", Lane.NORMAL),
        ("a", Lane.NORMAL),
        ("a", Lane.BULK),  # ...but the minute's own third is beyond the share then
        ("a", Lane.NORMAL),
        ("a", Lane.NORMAL),
    ]
    # Once due, they count: a job due after them finds the two of now and the three.
    assert lanes_of([delayed("a", 61, now)], shares, now) == [("a", Lane.BULK)]
    # A delay of a second is no way round the share.
    shares = TenantShares(share=2)
    sent = [delayed("b", 1, now), delayed("b", 1, now), submitted("b")[1]]
    assert lanes_of(sent, shares, now) == [("b", Lane.NORMAL)] * 3
    assert lanes_of([delayed("b", 2, now)], shares, now) == [("b", Lane.BULK)]


def test_retries_keep_their_lane_whatever_the_tenants_share() -> None:
    shares = TenantShares(share=1)
    lanes_of([submitted("a")[1], submitted("a")[1]], shares)
    job, _ = submitted("a")
    job.start(1, "w1", WORKER)
    job.fail_attempt("boom", retry_at=NOW, retryable=True, origin=WORKER)
    assert lanes_of(job.collect_events()[-1:], shares) == [("a", Lane.RETRY)]


# Routing keys and queues


def test_the_normal_lane_keeps_the_pools_queue_and_keys_and_the_others_add_the_lane() -> None:
    names = Names(prefix="jl", delay_levels=3)
    assert names.work_queue("gpu") == names.work_queue("gpu", Lane.NORMAL) == "jl.work.gpu"
    assert names.work_queue("gpu", Lane.RETRY) == "jl.work.gpu.retry"
    assert names.routing_key("gpu", 5) == "1.0.1.gpu"
    assert names.routing_key("gpu", 5, Lane.RETRY) == "1.0.1.gpu.retry"
    assert names.lane_binding("gpu", Lane.NORMAL) == "#.gpu"
    assert names.lane_binding("gpu", Lane.HIGH) == "*.*.*.gpu.high"


def test_a_pool_may_not_be_named_after_a_lane() -> None:
    with pytest.raises(ValueError, match="not a lane's name"):
        JobRegistry().add(plain, name="x", pool="high")


# The order a worker starts what it holds


def test_the_highest_lane_holding_a_message_is_served_first() -> None:
    picker: LanePicker[str] = LanePicker(starvation_bound=100)
    for lane in reversed(LANES):
        picker.add(lane, f"{lane}-1")
        picker.add(lane, f"{lane}-2")
    order = [picker.pick()[1] for _ in range(len(picker))]
    assert order == [f"{lane}-{n}" for lane in LANES for n in (1, 2)]


def test_a_waiting_lower_lane_is_passed_over_at_most_the_starvation_bound() -> None:
    picker: LanePicker[int] = LanePicker(starvation_bound=3)
    picker.add(Lane.BULK, -1)
    picker.add(Lane.LOW, -2)
    for n in range(20):
        picker.add(Lane.HIGH, n)
    lanes = [picker.pick()[0] for _ in range(10)]
    # bulk and low each wait three picks, then are served, the one passed over most first
    assert lanes == [Lane.HIGH] * 3 + [Lane.LOW, Lane.BULK] + [Lane.HIGH] * 5


def test_every_waiting_lane_is_served_within_the_bound_plus_one_pick_per_lane() -> None:
    bound = 4
    picker: LanePicker[tuple[Lane, int]] = LanePicker(starvation_bound=bound)
    for n in range(200):
        for lane in LANES:
            picker.add(lane, (lane, n))
    waited = dict.fromkeys(LANES, 0)
    for _ in range(300):
        lane, _message = picker.pick()
        for other in LANES:
            waited[other] = 0 if other is lane else waited[other] + 1
            assert waited[other] <= bound + len(LANES)


def test_a_stopping_worker_takes_back_everything_it_holds() -> None:
    picker: LanePicker[str] = LanePicker()
    picker.add(Lane.LOW, "a")
    picker.add(Lane.RETRY, "b")
    assert sorted(picker.take_all()) == ["a", "b"]
    assert len(picker) == 0
    with pytest.raises(IndexError):
        picker.pick()
