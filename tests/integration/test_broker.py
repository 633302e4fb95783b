"""RabbitMQ itself: exact delays without head-of-line blocking, and limits shared by
every worker. (Its consumer timeout and its restarts are in test_faults.py, on a node
of the test's own.)"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import datetime

import aio_pika

from application.lanes import LANES
from consumers.routing import Names
from domain.origin import Origin
from infra import ledger_store, topology
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import Stack, start_workers, submit, wait_for_status


async def _arrivals(stack: Stack, delays_s: list[int], until: set[int]) -> dict[int, float]:
    """Publish one message per delay, in order, through the delay queues; return the
    seconds each took to reach the work queue, once those in ``until`` have."""
    names = Names(
        stack.env["JOBLEDGER_AMQP__PREFIX"], int(stack.env["JOBLEDGER_AMQP__DELAY_LEVELS"])
    )
    connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names, ["default"], delivery_limit=5)
        entry = await channel.get_exchange(names.delay_entry)
        queue = await channel.get_queue(names.work_queue("default"))
        sent: dict[int, float] = {}
        for delay in delays_s:
            sent[delay] = time.monotonic()
            await entry.publish(
                aio_pika.Message(str(delay).encode()),
                routing_key=names.routing_key("default", delay),
            )
        arrived: dict[int, float] = {}
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                delay = int(message.body)
                arrived[delay] = time.monotonic() - sent[delay]
                if until <= set(arrived):
                    break
        return arrived


def test_a_delay_is_kept_to_a_second_and_a_long_one_does_not_hold_back_a_short_one(
    stack: Stack,
) -> None:
    # 30 s is queued first; the 1 s and 3 s ones must not wait behind it.
    arrived = asyncio.run(asyncio.wait_for(_arrivals(stack, [30, 3, 1], until={1, 3}), 90))
    # The broker's expiry timer may fire a few milliseconds before our clock says the
    # TTL is up (0.996 s was seen in CI): "to a second" allows 50 ms early.
    assert 0.95 <= arrived[1] <= 2.0
    assert 2.95 <= arrived[3] <= 4.0
    assert 30 not in arrived


def test_each_lane_gets_its_own_deliveries_direct_or_through_the_delay_queues(
    stack: Stack,
) -> None:
    names = Names(
        stack.env["JOBLEDGER_AMQP__PREFIX"], int(stack.env["JOBLEDGER_AMQP__DELAY_LEVELS"])
    )

    async def route() -> dict[str, list[bytes]]:
        connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            work = await topology.declare(channel, names, ["default", "side"], delivery_limit=5)
            entry = await channel.get_exchange(names.delay_entry)
            for lane in LANES:  # one direct, one round the delay queues, each lane
                key = names.routing_key("default", 0, lane)
                await work.publish(aio_pika.Message(f"{lane}:0".encode()), routing_key=key)
                key = names.routing_key("default", 1, lane)
                await entry.publish(aio_pika.Message(f"{lane}:1".encode()), routing_key=key)
            held: dict[str, list[bytes]] = {}
            for pool, lane in itertools.product(("default", "side"), LANES):
                queue = await channel.get_queue(names.work_queue(pool, lane))
                held[queue.name] = []
                deadline = time.monotonic() + (20 if pool == "default" else 0)
                while len(held[queue.name]) < (2 if pool == "default" else 0):
                    message = await queue.get(fail=False)
                    if message is None:
                        assert time.monotonic() < deadline, f"{queue.name} holds {held}"
                        await asyncio.sleep(0.05)
                        continue
                    await message.ack()
                    held[queue.name].append(message.body)
                assert await queue.get(fail=False) is None  # nothing more, nothing misrouted
            return held

    held = asyncio.run(route())
    for lane in LANES:
        assert sorted(held[names.work_queue("default", lane)]) == [
            f"{lane}:0".encode(),
            f"{lane}:1".encode(),
        ]


def test_a_rate_limit_spaces_the_starts_of_a_type_across_workers(stack: Stack) -> None:
    start_workers(stack, count=2)
    with stack.client() as client:
        ids = [submit(client, "metered", {})["id"] for _ in range(7)]
        done = [wait_for_status(client, job_id, timeout_s=60) for job_id in ids]
    starts = sorted(datetime.fromisoformat(job["started_at"]) for job in done)
    span = (starts[-1] - starts[0]).total_seconds()
    # 2 per second, with a burst of 2: seven starts need at least 2.5 s.
    assert span >= 2.2
    assert all(job["attempt"] == 1 for job in done)  # waiting did not spend attempts


def test_max_running_holds_across_workers(stack: Stack) -> None:
    start_workers(stack, count=2)
    with stack.client() as client:
        ids = [submit(client, "exclusive", {"seconds": 0.5})["id"] for _ in range(4)]
        done = [wait_for_status(client, job_id, timeout_s=60) for job_id in ids]
    spans = sorted((job["result"]["started"], job["result"]["ended"]) for job in done)
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended - 0.05, "two ran at once"
    assert all(job["attempt"] == 1 for job in done)


def test_a_job_the_worker_cannot_run_frees_its_concurrency_lease(stack: Stack) -> None:
    """Params the worker refuses (written to the ledger by an older gateway, say) fail
    the job; its max_running lease leaked, and the type never ran again."""
    start_workers(stack)
    settings = PostgresSettings(
        dbname=stack.env["JOBLEDGER_POSTGRES__DBNAME"],
        schema=stack.env["JOBLEDGER_POSTGRES__SCHEMA"],
    )
    ledger = ledger_store.open_ledger(settings, LedgerSettings(group_commit=False))
    try:
        refused = uuid.uuid4()
        ledger.submit_job(
            job_id=refused,
            tenant="dev",
            case_id="case-1",
            job_type="exclusive",
            params={"seconds": "not a number"},
            pool="default",
            max_attempts=1,
            origin=Origin("older-gateway"),
        )
    finally:
        ledger.close()
    with stack.client() as client:
        assert wait_for_status(client, str(refused))["status"] == "failed"
        after = submit(client, "exclusive", {"seconds": 0.1})
        assert wait_for_status(client, after["id"], timeout_s=20)["status"] == "succeeded"
