"""Retries with exact backoff, dead letters and operators' re-drives, over the real
processes, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

import aio_pika
import httpx

from consumers.routing import Names
from tests.integration.conftest import MANAGEMENT, Stack, eventually, submit, wait_for_status


def history(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/jobs/{job_id}/events").json()
    return events


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


def test_a_retryable_failure_is_retried_after_its_recorded_backoff_until_it_succeeds(
    running: Stack,
) -> None:
    with running.client() as client:
        job = submit(client, "flaky", {"fail_attempts": 2})
        done = wait_for_status(client, job["id"])
        events = history(client, job["id"])

    assert done["status"] == "succeeded" and done["result"] == {"attempt": 3}
    starts = [e for e in events if e["type"] == "Started"]
    failures = [e for e in events if e["type"] == "AttemptFailed"]
    assert [e["attempt"] for e in starts] == [1, 2, 3]
    assert [e["attempt"] for e in failures] == [1, 2]
    for failure, next_start in zip(failures, starts[1:], strict=True):
        retry_at = datetime.fromisoformat(failure["data"]["retry_at"])
        assert failure["data"]["retryable"] is True
        # The delay rides the delay queues: the next attempt starts after retry_at
        # (rounded up to a whole second) and within about a second of it.
        assert -0.05 <= (at(next_start) - retry_at).total_seconds() <= 2.0


def test_a_handler_can_ask_for_its_own_retry_delay(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "ask_retry", {"delay_s": 3})
        wait_for_status(client, job["id"])
        events = history(client, job["id"])
    failure = next(e for e in events if e["type"] == "AttemptFailed")
    second = [e for e in events if e["type"] == "Started"][1]
    waited = (at(second) - at(failure)).total_seconds()
    assert failure["data"]["error"] == "Retry: not ready yet"
    assert 2.9 <= waited <= 5.0


async def _dead_letters(stack: Stack) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in the DLQ (taken out of it)."""
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
    taken = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.dead_queue)
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
    return taken


def test_a_job_that_exhausts_its_attempts_fails_and_its_message_is_dead_lettered(
    running: Stack,
) -> None:
    with running.client() as client:
        job = submit(client, "flaky_twice", {"fail_attempts": 5})
        done = wait_for_status(client, job["id"])
        types = [e["type"] for e in history(client, job["id"])]
        listed = eventually(lambda: client.get("/dlq").json(), 10, "GET /dlq to list it")

    assert done["status"] == "failed" and done["attempt"] == 2
    assert types[-2:] == ["AttemptFailed", "Failed"]
    assert listed[0]["job_id"] == job["id"]
    assert listed[0]["reason"] == "rejected"
    assert listed[0]["job_error"] == "RuntimeError: attempt 2 fails on purpose"
    [dead] = asyncio.run(_dead_letters(running))
    headers = dead.headers
    assert headers["x-job-id"] == job["id"]
    assert headers["x-job-type"] == "flaky_twice"
    assert headers["x-attempt"] == 2
    assert headers["x-tenant"] == "dev"
    assert headers["x-correlation-id"] == done["correlation_id"]
    assert headers["x-death"][0]["reason"] == "rejected"  # the queue's own dead-lettering


def test_an_operator_moving_a_dead_message_back_retries_the_job_once(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "flaky_twice", {"fail_attempts": 2})
        wait_for_status(client, job["id"])
        eventually(lambda: client.get("/dlq").json(), 10, "the dead letter")

        # What an operator does in the management UI: take the message from the DLQ
        # and publish it to the work queue (here through the management HTTP API).
        _move_dead_letter_back(running)
        eventually(
            lambda: client.get(f"/jobs/{job['id']}").json()["status"] == "succeeded",
            30,
            "the re-driven job to succeed",
        )
        events = history(client, job["id"])

    retry = next(e for e in events if e["type"] == "RetryRequested")
    assert retry["actor"] == "operator"
    assert [e["type"] for e in events].count("Started") == 3
    assert [e["type"] for e in events].count("Succeeded") == 1


def _move_dead_letter_back(stack: Stack) -> None:
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    vhost = quote(unquote(stack.env["JOBLEDGER_AMQP__URL"].rsplit("/", 1)[1]), safe="")
    with httpx.Client(auth=("guest", "guest"), timeout=30) as api:
        [message] = api.post(
            f"{MANAGEMENT}/queues/{vhost}/{quote(names.dead_queue, safe='')}/get",
            json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"},
        ).json()
        published = api.post(
            f"{MANAGEMENT}/exchanges/{vhost}/amq.default/publish",
            json={
                "routing_key": names.work_queue("default"),
                "payload": message["payload"],
                "payload_encoding": message["payload_encoding"],
                "properties": message["properties"],
            },
        ).json()
    assert published == {"routed": True}


def test_an_undecodable_message_is_dead_lettered_with_a_reason_and_the_worker_keeps_running(
    running: Stack,
) -> None:
    async def publish_garbage() -> None:
        names = Names(running.env["JOBLEDGER_AMQP__PREFIX"])
        connection = await aio_pika.connect(running.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel()
            work = await channel.get_exchange(names.work_exchange)
            await work.publish(aio_pika.Message(b"\xff not json"), routing_key="default")

    asyncio.run(publish_garbage())
    dead = eventually(lambda: asyncio.run(_dead_letters(running)), 15, "the dead letter")
    assert dead[0].body == b"\xff not json"
    assert dead[0].headers["x-reason"].startswith("undecodable")
    with running.client() as client:
        job = submit(client, "echo", {"text": "still here"})
        assert wait_for_status(client, job["id"])["status"] == "succeeded"
