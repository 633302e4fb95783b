"""RabbitMQ itself: exact delays without head-of-line blocking, its consumer timeout,
a restart in the middle of a run, and limits shared by every worker."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime

import aio_pika
import pytest

from consumers.routing import Names
from infra import topology
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
    assert 1.0 <= arrived[1] <= 2.0
    assert 3.0 <= arrived[3] <= 4.0
    assert 30 not in arrived


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


BROKER_SETTINGS = {"consumer_timeout": "2000", "channel_tick_interval": "1000"}


@pytest.fixture
def short_consumer_timeout() -> Iterator[None]:
    """Lower the broker's consumer_timeout to 2 s, checked every second (for channels
    opened from now on), and put both settings back as they were, whatever happens.
    Both keys exist on every broker (the channel reads its tick interval with a hard
    match), so they are always set back, never unset."""
    before = {key: _get_env(key) for key in BROKER_SETTINGS}
    try:
        for key, value in BROKER_SETTINGS.items():
            _set_env(key, value)
        yield
    finally:
        for key, value in before.items():
            _set_env(key, value)


def _get_env(key: str) -> str:
    answer = _rabbitmqctl("eval", f"application:get_env(rabbit, {key}).")
    if not answer.startswith("{ok,"):
        pytest.fail(f"the broker has no {key} setting: {answer}")
    return answer.removeprefix("{ok,").removesuffix("}")


def _set_env(key: str, value: str) -> None:
    _rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")


def test_a_job_longer_than_the_consumer_timeout_completes_exactly_once(
    stack: Stack, short_consumer_timeout: None
) -> None:
    start_workers(stack)
    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 8})
        done = wait_for_status(client, job["id"], timeout_s=60)
        names = [e["type"] for e in client.get(f"/jobs/{job['id']}/events").json()]
    assert done["status"] == "succeeded"
    assert names.count("Started") == 1 and names.count("Succeeded") == 1
    assert "AttemptFailed" not in names


@pytest.fixture
def broker_restart() -> Iterator[None]:
    """Yield; the test restarts RabbitMQ. Whatever happens, it is running after."""
    try:
        yield
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")


def test_a_broker_restart_during_a_run_loses_no_job(stack: Stack, broker_restart: None) -> None:
    stack.start("run")
    stack.wait_ready()
    with stack.client() as client:
        first = [submit(client, "nap", {"seconds": 1})["id"] for _ in range(10)]
        wait_for_status(client, first[0], {"running", "succeeded"})
        _rabbitmqctl("stop_app")
        during = [submit(client, "echo", {"text": str(n)})["id"] for n in range(5)]
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
        after = [submit(client, "echo", {"text": "after"})["id"] for _ in range(5)]
        done = [wait_for_status(client, job_id, timeout_s=120) for job_id in first + during + after]
        histories = [
            [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()]
            for job_id in first + during + after
        ]
    assert {job["status"] for job in done} == {"succeeded"}
    assert all(h.count("Succeeded") == 1 for h in histories)


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
