"""At-least-once delivery, exactly-once execution: duplicates lose harmlessly."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika

from application.delivery import Delivery
from consumers.routing import Names
from tests.integration.conftest import (
    Stack,
    consumer_count,
    eventually,
    submit,
    wait_for_status,
)


async def _publish_copies(stack: Stack, jobs: list[dict[str, Any]], copies: int) -> None:
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(names.work_exchange)
        for job in jobs:
            delivery = Delivery(
                job_id=uuid.UUID(job["id"]),
                attempt=1,
                job_type=job["type"],
                tenant="dev",
                case_id=job["case_id"],
                pool="default",
            )
            for _ in range(copies):
                await exchange.publish(
                    aio_pika.Message(delivery.body(), headers=delivery.headers()),
                    routing_key="default",
                )


def test_two_workers_never_both_run_one_delivery(stack: Stack) -> None:
    small = {"JOBLEDGER_WORKER__CONCURRENCY": "2", "JOBLEDGER_WORKER__PREFETCH": "2"}
    stack.start("run", **small)
    stack.start("worker", **small)  # a second worker process on the same pool
    stack.wait_ready()
    eventually(lambda: consumer_count(stack) == 2, 30, "two consumers")
    running = stack
    with running.client() as client:
        jobs = [submit(client, "nap", {"seconds": 0.2}) for _ in range(12)]
        asyncio.run(_publish_copies(running, jobs, copies=2))  # every delivery three times
        for job in jobs:
            wait_for_status(client, job["id"])
        histories = [
            [e["type"] for e in client.get(f"/jobs/{job['id']}/events").json()] for job in jobs
        ]

    for history in histories:
        assert history.count("Started") == 1, history
        assert history.count("Succeeded") == 1, history
    workers = set()
    with running.client() as client:
        for job in jobs:
            started = next(
                e for e in client.get(f"/jobs/{job['id']}/events").json() if e["type"] == "Started"
            )
            workers.add(started["data"]["worker_id"])
    assert len(workers) == 2, "both workers took part"


def test_a_delivery_for_an_unknown_job_is_dead_lettered_and_the_worker_keeps_running(
    running: Stack,
) -> None:
    ghost = {"id": str(uuid.uuid4()), "type": "echo", "case_id": "ghost"}
    asyncio.run(_publish_copies(running, [ghost], copies=1))
    names = Names(running.env["JOBLEDGER_AMQP__PREFIX"])

    async def dead_letter() -> aio_pika.abc.AbstractIncomingMessage:
        connection = await aio_pika.connect(running.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(names.dead_queue)
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    return message
        raise AssertionError("no dead letter")

    message = asyncio.run(asyncio.wait_for(dead_letter(), 30))
    assert message.headers["x-reason"] == "unknown job"
    assert message.headers["x-job-id"] == ghost["id"]
    with running.client() as client:
        job = submit(client, "echo", {"text": "still alive"})
        assert wait_for_status(client, job["id"])["status"] == "succeeded"
