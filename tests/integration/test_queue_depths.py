"""The dispatcher's queue-depth sampler against the broker: sparse while nothing
moves, every interval again as soon as jobs are sent or a queue holds any."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aio_pika

from infra.gauges import QueueDepths
from tests.integration.conftest import AMQP_HOST

QUORUM = {"x-queue-type": "quorum"}


async def samples_within(depths: QueueDepths, seconds: float) -> int:
    before = depths.samples
    await asyncio.sleep(seconds)
    return depths.samples - before


async def until(probe: Callable[[], bool], timeout_s: float) -> None:
    """Wait until ``probe()`` is true; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not probe():
            await asyncio.sleep(0.01)


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
                depths.watch(connection, {work.name: "default"}, interval_s=0.1, quiet_max_s=30.0)
            )
            try:
                # Quiet: samples at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s; every 0.1 s, 35.
                quiet = await samples_within(depths, 3.5)
                assert 2 <= quiet <= 8, quiet

                # Jobs sent: the next sample comes an interval after the last (here at
                # once), not at the end of the quiet wait (3.2 s from the last sample,
                # at 3.1 s: still 2.8 s away).
                await channel.default_exchange.publish(
                    aio_pika.Message(b"job"), routing_key=work.name
                )
                depths.sent()
                await until(lambda: depths.depths[work.name] == 1, 1.5)

                # A work queue that holds a job is sampled every interval (quiet, 1.5 s
                # would see one sample at most).
                busy = await samples_within(depths, 1.5)
                assert busy >= 3, busy
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
                await work.delete(if_unused=False, if_empty=False)
                await dead.delete(if_unused=False, if_empty=False)

    asyncio.run(scenario())
