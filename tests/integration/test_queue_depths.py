"""The dispatcher's queue-depth sampler against the broker: sparse while nothing
moves, every interval again as soon as jobs are sent or a queue holds any."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

from infra.gauges import QueueDepths
from tests.integration.conftest import AMQP_HOST

QUORUM = {"x-queue-type": "quorum"}


async def samples_within(depths: QueueDepths, seconds: float) -> int:
    before = depths.samples
    await asyncio.sleep(seconds)
    return depths.samples - before


async def until(probe: object, timeout_s: float) -> float:
    """Seconds until ``probe()`` is true (fails after ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout_s):
        while not probe():  # type: ignore[operator]
            await asyncio.sleep(0.01)
    return loop.time() - started


def test_quiet_queues_are_sampled_seldom_and_sent_jobs_bring_sampling_back(vhost: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        connection = await aio_pika.connect_robust(f"amqp://guest:guest@{AMQP_HOST}/")
        async with connection:
            channel = await connection.channel()
            work = await channel.declare_queue(f"{prefix}.work", durable=True, arguments=QUORUM)
            dead = await channel.declare_queue(f"{prefix}.dead", durable=True, arguments=QUORUM)
            depths = QueueDepths(dead.name)
            watching = asyncio.create_task(
                depths.watch(connection, {work.name: "default"}, interval_s=0.1, quiet_max_s=4.0)
            )
            try:
                # Quiet: waits of 0.1, 0.2, 0.4, 0.8, 1.6 s; every 0.1 s, 35 samples.
                quiet = await samples_within(depths, 3.5)
                assert 2 <= quiet <= 8, quiet

                # Jobs sent: the next sample comes an interval after the last, not
                # at the end of the quiet wait (up to 4 s away).
                await channel.default_exchange.publish(
                    aio_pika.Message(b"job"), routing_key=work.name
                )
                depths.sent()
                waited = await until(lambda: depths.depths[work.name] == 1, 3.0)
                assert waited < 3.0

                # A work queue that holds a job is sampled every interval.
                busy = await samples_within(depths, 1.0)
                assert busy >= 4, busy
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
                await work.delete(if_unused=False, if_empty=False)
                await dead.delete(if_unused=False, if_empty=False)

    asyncio.run(scenario())
