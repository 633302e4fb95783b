"""The hub fans ledger events out to the streams: each feed gets its own events, in
order, once; a stream that falls too far behind is cut off without holding up others."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

from domain.job import Job
from domain.origin import Origin
from domain.schedule import Schedule
from gateway.hub import StreamHub
from gateway.stream import Feed

ORIGIN = Origin(actor="alice", correlation_id="corr-1")
WORKER = Origin(actor="worker-1", correlation_id="corr-1")


def job_events(tenant: str = "t1", case_id: str = "case-1", progress: int = 2) -> list[Any]:
    job = Job.submit(
        job_id=uuid4(),
        tenant=tenant,
        case_id=case_id,
        job_type="segment",
        params={"scan_id": "secret-scan"},
        pool="default",
        max_attempts=1,
        origin=ORIGIN,
    )
    job.start(1, "w1", WORKER)
    for n in range(progress):
        job.report_progress(n * 10, f"step {n}", WORKER)
    job.succeed({"ok": True}, WORKER)
    return list(job.collect_events())


def positioned(events: list[Any], start: int) -> list[tuple[Any, int]]:
    return [(event, start + n) for n, event in enumerate(events)]


def drained(subscription: Any) -> list[dict[str, Any]]:
    frames = []
    while subscription.queue:
        frame = subscription.queue.popleft().frame.decode()
        frames.append(json.loads(frame.split("data: ", 1)[1]))
    return frames


def test_each_feed_takes_only_its_own_events_and_never_another_tenants() -> None:
    hub = StreamHub(position=0, client_queue_size=100)
    a, b, other = job_events(case_id="a"), job_events(case_id="b"), job_events(tenant="t2")
    job_a = a[0].originator_id
    by_job = hub.subscribe(Feed(tenant="t1", job_id=job_a))
    by_case = hub.subscribe(Feed(tenant="t1", case_id="a"))
    by_tenant = hub.subscribe(Feed(tenant="t1"))
    stranger = hub.subscribe(Feed(tenant="t2", job_id=job_a))
    hub.publish(positioned(a, 1) + positioned(b, 101) + positioned(other, 201))
    assert {e["job_id"] for e in drained(by_job)} == {str(job_a)}
    assert {e["job_id"] for e in drained(by_case)} == {str(job_a)}
    assert len(drained(by_tenant)) == len(a) + len(b)
    assert drained(stranger) == []


def test_an_event_carries_its_position_status_and_data_but_never_the_params() -> None:
    hub = StreamHub(position=0, client_queue_size=100)
    events = job_events(progress=1)
    subscription = hub.subscribe(Feed(tenant="t1"))
    hub.publish(positioned(events, 7))
    frames = [s.frame.decode() for s in subscription.queue]
    assert frames[0].startswith("id: 7\nevent: status\n")
    assert frames[2].startswith("id: 9\nevent: progress\n")
    assert frames[3].startswith("id: 10\nevent: result\n") and frames[3].endswith("\n\n")
    data = drained(subscription)
    assert [d["status"] for d in data] == ["queued", "running", "running", "succeeded"]
    assert "secret-scan" not in "".join(frames)
    assert data[0]["data"] == {
        "max_attempts": 1,
        "run_at": None,
        "priority": "normal",
    }  # pool and params stay out
    assert data[3]["type"] == "Succeeded" and data[3]["data"] == {"result": {"ok": True}}


def test_events_at_or_below_the_hubs_position_are_not_published_again() -> None:
    hub = StreamHub(position=0, client_queue_size=100)
    events = positioned(job_events(), 1)
    subscription = hub.subscribe(Feed(tenant="t1"))
    hub.publish(events[:3])
    hub.publish(events)  # a follower that restarted a little behind
    assert [e["position"] for e in drained(subscription)] == [1, 2, 3, 4, 5]
    assert hub.position == 5


def test_a_stream_too_far_behind_is_cut_off_and_the_others_continue() -> None:
    hub = StreamHub(position=0, client_queue_size=3)
    slow = hub.subscribe(Feed(tenant="t1"))
    fast = hub.subscribe(Feed(tenant="t1"))
    for n, event in enumerate(job_events(progress=6)):
        hub.publish([(event, n + 1)])
        while fast.queue:
            fast.queue.popleft()  # the fast reader keeps up
        assert len(slow.queue) <= 3  # memory stays bounded
    assert slow.cut.is_set() and not slow.queue
    assert not fast.cut.is_set()
    hub.unsubscribe(slow)
    assert hub.cut_off == 1 and len(hub) == 1


def test_closing_the_hub_ends_every_stream() -> None:
    hub = StreamHub(position=0, client_queue_size=3)
    subscriptions = [
        hub.subscribe(Feed(tenant="t1")),
        hub.subscribe(Feed(tenant="t1", case_id="c")),
    ]
    hub.close()
    assert all(s.closed and s.wake.is_set() for s in subscriptions)
    assert hub.subscribe(Feed(tenant="t1")).closed


async def test_every_stream_gets_a_keep_alive_from_the_hubs_one_timer() -> None:
    hub = StreamHub(position=0, client_queue_size=3, heartbeat_interval_s=0.01)
    subscriptions = [hub.subscribe(Feed(tenant="t1")), hub.subscribe(Feed(tenant="t2"))]
    beating = asyncio.create_task(hub.heartbeats())
    try:
        async with asyncio.timeout(5):
            while not all(s.beat for s in subscriptions):
                await asyncio.sleep(0.005)
    finally:
        beating.cancel()
    assert all(s.wake.is_set() for s in subscriptions)


def test_a_schedules_events_in_the_ledger_pass_the_job_streams_by() -> None:
    """Schedules share the ledger; a tenant's feed follows its jobs and is not broken
    by a schedule's events (they have no job status to encode)."""
    hub = StreamHub(position=0, client_queue_size=100)
    by_tenant = hub.subscribe(Feed(tenant="t1"))
    schedule = Schedule.create(
        tenant="t1",
        name="nightly",
        definition={
            "cron": "* * * * *",
            "zone": "UTC",
            "job_type": "segment",
            "case_id": "case-1",
            "params": {},
            "catch_up": "latest",
        },
        paused=False,
        origin=ORIGIN,
    )
    schedule.pause(ORIGIN)
    jobs = job_events()
    hub.publish(positioned(list(schedule.collect_events()), 1) + positioned(jobs, 3))
    assert [e["position"] for e in drained(by_tenant)] == list(range(3, 3 + len(jobs)))
