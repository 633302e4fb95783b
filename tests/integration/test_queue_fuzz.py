"""Fuzzing the queues the workers read: whatever is published to the work queue or
the cancel broadcasts, the worker goes on, every work message it cannot use reaches
the DLQ with a reason, and the queue drains."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import aio_pika
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.routing import Names
from tests.integration.conftest import (
    MANAGEMENT,
    Stack,
    eventually,
    start_workers,
    submit,
    wait_for_status,
)

MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "150"))
FIELDS = [
    "job_id",
    "attempt",
    "job_type",
    "tenant",
    "case_id",
    "pool",
    "correlation_id",
    "delivery_id",
]
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.just("\u0000"),
    st.just("\ud800"),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(str(uuid.uuid4())),
)
# Bodies that look like a delivery, with any field odd or missing; bodies that are
# JSON of any shape; bytes of any kind; deep nesting.
SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "job_id": st.one_of(st.just(str(uuid.uuid4())), ODD),
        "attempt": st.one_of(st.integers(-5, 10**30), ODD),
        **{name: ODD for name in FIELDS[2:]},
    },
).map(lambda fields: json.dumps(fields).encode())
BODIES = st.one_of(
    SHAPED,
    st.recursive(ODD, lambda c: st.lists(c, max_size=3), max_leaves=6).map(
        lambda v: json.dumps(v).encode()
    ),
    st.binary(max_size=300),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b"x" * 5000),
)
HEADERS = st.dictionaries(
    st.sampled_from(["x-death", "x-reason", "x-job-id", "traceparent", "x-attempt", "x-tenant"]),
    st.one_of(
        st.text(max_size=30),
        st.integers(-(2**63), 2**63 - 1),  # what an AMQP header can carry
        st.lists(
            st.dictionaries(st.sampled_from(["reason", "queue"]), st.text(max_size=20)), max_size=2
        ),
    ),
    max_size=3,
)


def _queue(stack: Stack, name: str) -> dict[str, Any]:
    response = httpx.get(f"{MANAGEMENT}/queues/%2F/{name}", auth=("guest", "guest"), timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_whatever_reaches_the_queues_the_worker_goes_on_and_the_dlq_takes_it(stack: Stack) -> None:
    start_workers(stack, JOBLEDGER_WORKER__CONCURRENCY="2", JOBLEDGER_WORKER__PREFETCH="4")
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    messages: list[tuple[bytes, dict[str, Any]]] = []

    @given(body=BODIES, headers=HEADERS)
    @settings(
        max_examples=MESSAGES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def collect(body: bytes, headers: dict[str, Any]) -> None:
        messages.append((body, headers))

    collect()

    async def publish() -> None:
        connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel()
            work = await channel.get_exchange(names.work_exchange)
            control = await channel.get_exchange(names.control_exchange)
            for body, headers in messages:
                await work.publish(aio_pika.Message(body, headers=headers), routing_key="default")
                await control.publish(aio_pika.Message(body, headers=headers), routing_key="cancel")

    asyncio.run(publish())
    with stack.client() as client:
        job = submit(client, "echo", {"text": "after the fuzz"})
        assert wait_for_status(client, job["id"], timeout_s=60)["status"] == "succeeded"

    def drained() -> dict[str, Any] | None:
        work = _queue(stack, names.work_queue("default"))
        dead = _queue(stack, names.dead_queue)
        return (
            dead
            if work.get("messages", 1) == 0 and dead.get("messages", 0) >= len(messages)
            else None
        )

    dead = eventually(drained, 60, "the work queue to drain into the DLQ")
    assert dead["messages"] == len(messages)
    stack.check_alive()
