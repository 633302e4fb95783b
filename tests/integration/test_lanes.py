"""Lanes through the real stack: with a backlog queued before any worker consumes, a
high job, another tenant's job and a failing job's due retry all start before most
of the backlog."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
from aio_pika import ExchangeType

from application.delivery import Delivery
from application.lanes import LANES
from consumers.messages import delivery_message
from consumers.routing import Names
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import (
    MANAGEMENT,
    Stack,
    eventually,
    start_workers,
    submit,
    wait_for_status,
)

BACKLOG = 150
NAP = {"seconds": 0.05}


def queued(stack: Stack, *queues: str) -> int:
    """Messages in ``queues``, or in every lane of the default pool."""
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    queues = queues or tuple(names.work_queue("default", lane) for lane in LANES)

    async def count() -> int:
        connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel()
            total = 0
            for name in queues:
                queue = await channel.declare_queue(name, passive=True)
                total += queue.declaration_result.message_count or 0
            return total

    return asyncio.run(count())


def post(client: Any, job_type: str, case_id: str, params: dict[str, Any], **body: Any) -> str:
    response = client.post(
        "/jobs", json={"type": job_type, "case_id": case_id, "params": params, **body}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def started(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["started_at"])


def test_high_jobs_other_tenants_and_due_retries_go_ahead_of_a_backlog(stack: Stack) -> None:
    stack.start("run", JOBLEDGER_WORKER__POOL="elsewhere")  # no worker on the default pool
    stack.wait_ready()
    with stack.client() as client, stack.client(tenant="other") as other:
        batch = {"jobs": [{"type": "nap", "case_id": "backlog", "params": NAP}] * BACKLOG}
        assert client.post("/jobs/batch", json=batch).status_code == 202
        high = post(client, "nap", "high", NAP, priority="high")
        flaky = post(client, "flaky", "retry", {"fail_attempts": 1}, priority="high")
        theirs = post(other, "nap", "theirs", NAP)
        assert client.get(f"/jobs/{high}").json()["priority"] == "high"
        eventually(lambda: queued(stack) == BACKLOG + 3, 60, "every job to be queued")

        start_workers(stack, JOBLEDGER_WORKER__CONCURRENCY="1")

        def backlog_done() -> list[dict[str, Any]] | None:
            page = client.get("/jobs/backlog/jobs", params={"limit": 200}).json()["items"]
            done = [job for job in page if job["status"] == "succeeded"]
            return done if len(done) == BACKLOG else None

        backlog = [started(job) for job in eventually(backlog_done, 120, "the backlog to run")]
        assert all(
            job["priority"] == "normal" for job in client.get("/jobs/backlog/jobs").json()["items"]
        )
        retried = client.get(f"/jobs/{flaky}").json()
        assert (retried["status"], retried["attempt"]) == ("succeeded", 2)
        firsts = {
            "high": started(client.get(f"/jobs/{high}").json()),
            "theirs": started(other.get(f"/jobs/{theirs}").json()),
            "retry": started(retried),
        }

    after = {name: sum(b > at for b in backlog) for name, at in firsts.items()}
    # The high job goes first (the flaky one is high too); another tenant's job waits
    # behind the backlog's first share in the normal lane, not behind its bulk; the due
    # retry (about a second after its failure) goes ahead of what is still queued.
    assert after["high"] >= BACKLOG - 2, after
    assert after["theirs"] >= BACKLOG - 16 - 10, after
    assert after["retry"] >= BACKLOG // 2, after


def test_a_work_queue_declared_before_lanes_keeps_its_messages_and_is_drained(
    stack: Stack, pg: PostgresSettings
) -> None:
    """A deployment upgraded with a delivery waiting: the pool's queue as the code
    before lanes declared it (same name, arguments and binding), a message in it."""
    names = Names(
        stack.env["JOBLEDGER_AMQP__PREFIX"], int(stack.env["JOBLEDGER_AMQP__DELAY_LEVELS"])
    )
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    job_id = uuid.uuid4()
    try:
        ledger.submit_job(
            job_id=job_id,
            tenant="dev",
            case_id="case-1",
            job_type="echo",
            params={"text": "queued before lanes"},
            pool="default",
            max_attempts=1,
            origin=Origin("older-gateway"),
        )
    finally:
        ledger.close()

    async def declare_as_before_lanes() -> None:
        connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            work = await channel.declare_exchange(
                names.work_exchange, ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                f"{names.prefix}.work.default",  # the name the code before lanes gave it
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-dead-letter-exchange": names.dead_exchange,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                    "x-delivery-limit": int(stack.env.get("JOBLEDGER_AMQP__DELIVERY_LIMIT", "20")),
                },
            )
            await queue.bind(work, routing_key="#.default")
            old = Delivery(job_id, 1, "echo", "dev", "case-1", "default")
            await work.publish(delivery_message(old, 0), routing_key=names.routing_key("default"))

    asyncio.run(declare_as_before_lanes())
    stack.start("run")  # declares the lanes beside it; its dispatcher sends a copy too
    stack.wait_ready()
    with stack.client() as client:
        assert wait_for_status(client, str(job_id))["status"] == "succeeded"
        events = client.get(f"/jobs/{job_id}/events").json()
        assert [e["type"] for e in events].count("Started") == 1
        after = submit(client, "echo", {"text": "after"})
        assert after["priority"] == "normal"
        assert wait_for_status(client, after["id"])["status"] == "succeeded"
    # Both copies (the old one and the dispatcher's) settled: none ready, none unacked
    # (the management API's figures, sampled every few seconds).
    old_queue = f"{MANAGEMENT}/queues/%2F/{quote(names.prefix + '.work.default', safe='')}"

    def settled() -> bool:
        queue = httpx.get(old_queue, auth=("guest", "guest"), timeout=10).json()
        return "messages" in queue and queue["messages"] == 0

    eventually(settled, 30, "both copies in the old queue to be settled")
