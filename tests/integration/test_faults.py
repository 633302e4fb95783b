"""Real faults between a worker and its servers: a COMMIT whose reply is lost, an AMQP
connection dropped right after a start, a broker restart while jobs fail, a consumer
timeout. Each runs through a TCP proxy the test controls (tests/faults.py), or on a
RabbitMQ node of the module's own: the shared servers are never cut, stopped,
restarted or reconfigured."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consumers.routing import Names
from tests.faults import PrivateRabbit, TcpProxy, scratch_dir
from tests.integration.conftest import (
    PG,
    Stack,
    eventually,
    start_workers,
    submit,
    wait_for_status,
)

# The one statement of a ledger write: every append is one call of the events table's
# function, in autocommit (infra/ledger_recorder.py), so its end is its commit.
LEDGER_WRITE = b"_events_append"

# Kills and restarts of servers of the tests' own: `make test-faults` (CI runs it too).
pytestmark = pytest.mark.faults


def names(client: httpx.Client, job_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()]


def dead_letters(management_url: str, queue: str) -> list[dict[str, Any]]:
    """The DLQ's messages, read through the management API and put back."""
    base = management_url.replace("guest:guest@", "")
    response = httpx.post(
        f"{base}/api/queues/%2F/{queue}/get",
        json={"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"},
        auth=("guest", "guest"),
        timeout=10,
    )
    response.raise_for_status()
    return [m["properties"].get("headers") or {} for m in response.json()]


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    with TcpProxy(PG["host"], int(PG["port"])) as proxy:
        yield proxy


def test_a_start_whose_commit_reply_is_lost_still_runs_its_job_once(
    stack: Stack, postgres_proxy: TcpProxy
) -> None:
    """The worker's Started commits, the reply is lost: the retry is refused, the job is
    read back and found started by this copy, and it runs (it stayed running for good)."""
    start_workers(stack, JOBLEDGER_POSTGRES__PORT=str(postgres_proxy.port))
    postgres_proxy.cut_after_commit(1, writing=LEDGER_WRITE)
    with stack.client() as client:
        job = submit(client, "echo", {"text": "once"})
        done = wait_for_status(client, job["id"], timeout_s=30)
        history = names(client, job["id"])

    assert postgres_proxy.commits_cut == 1
    assert done["status"] == "succeeded"
    assert history.count("Started") == 1 and history.count("Succeeded") == 1


def test_a_failure_whose_commit_reply_is_lost_still_reaches_the_dlq_once(
    stack: Stack, postgres_proxy: TcpProxy
) -> None:
    start_workers(stack, JOBLEDGER_POSTGRES__PORT=str(postgres_proxy.port))
    dlq = Names(stack.env["JOBLEDGER_AMQP__PREFIX"]).dead_queue
    with stack.client() as client:
        job = submit(client, "slow_fail", {"seconds": 1})
        wait_for_status(client, job["id"], {"running"})
        postgres_proxy.cut_after_commit(1, writing=LEDGER_WRITE)
        done = wait_for_status(client, job["id"], timeout_s=30)

        def in_the_dlq() -> list[dict[str, Any]]:
            return [
                h
                for h in dead_letters("http://127.0.0.1:15672", dlq)
                if h.get("x-job-id") == job["id"]
            ]

        found = eventually(in_the_dlq, 15, "the failed job in the DLQ")
        history = names(client, job["id"])

    assert postgres_proxy.commits_cut == 1
    assert done["status"] == "failed"
    assert history.count("Failed") == 1
    assert len(found) == 1


def test_a_connection_dropped_right_after_a_start_leaves_the_attempt_to_its_worker(
    stack: Stack,
) -> None:
    """The worker's AMQP connection drops a moment after its start, long before its next
    heartbeat lists the job: the copy goes to another worker, which must see the attempt
    as still held (it was recorded lost, and the handler ran twice)."""
    with TcpProxy("127.0.0.1", 5672) as amqp:
        url = stack.env["JOBLEDGER_AMQP__URL"].replace(":5672/", f":{amqp.port}/")
        [first] = start_workers(
            stack,
            JOBLEDGER_AMQP__URL=url,
            JOBLEDGER_WORKER__HEARTBEAT_INTERVAL_S="30",
            JOBLEDGER_WORKER__HEARTBEAT_TTL_S="60",
        )
        with stack.client() as client:
            job = submit(client, "nap", {"seconds": 6})
            wait_for_status(client, job["id"], {"running"})
            start_workers(stack)  # the second worker, which gets the copy back
            amqp.cut_all()
            done = wait_for_status(client, job["id"], timeout_s=60)
            events = client.get(f"/jobs/{job['id']}/events").json()

    assert done["status"] == "succeeded"
    history = [e["type"] for e in events]
    assert history.count("Started") == 1, history
    assert "AttemptFailed" not in history
    assert first.poll() is None  # the first worker lived through it


def test_a_worker_stops_while_its_broker_is_unreachable(stack: Stack) -> None:
    """SIGTERM while every reconnect is refused: with no job to finish and no message it
    could settle anyway, the worker stops; it must not wait for the broker to return."""
    with TcpProxy("127.0.0.1", 5672) as amqp:
        url = stack.env["JOBLEDGER_AMQP__URL"].replace(":5672/", f":{amqp.port}/")
        [worker] = start_workers(stack, JOBLEDGER_AMQP__URL=url)
        amqp.cut_all()
    time.sleep(0.5)  # the proxy's port is closed: the worker is reconnecting, in vain
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker did not stop within 20 s of SIGTERM, its broker unreachable")
    assert worker.returncode == 0


@pytest.fixture(scope="module")
def own_broker() -> Iterator[PrivateRabbit]:
    root = scratch_dir("faults-rabbit-")
    try:
        with PrivateRabbit(root) as rabbit:
            yield rabbit
    finally:
        shutil.rmtree(root, ignore_errors=True)


def on_own_broker(stack: Stack, rabbit: PrivateRabbit) -> None:
    stack.env["JOBLEDGER_AMQP__URL"] = rabbit.url
    stack.env["JOBLEDGER_AMQP__MANAGEMENT_URL"] = rabbit.management_url


def test_jobs_failing_while_the_broker_restarts_reach_the_dlq_once_each(
    stack: Stack, own_broker: PrivateRabbit
) -> None:
    """Their rejects die with the connection; the copies come back and are rejected
    again, from the ledger."""
    on_own_broker(stack, own_broker)
    stack.start("run", JOBLEDGER_WORKER__CONCURRENCY="8")
    stack.wait_ready()
    dlq = Names(stack.env["JOBLEDGER_AMQP__PREFIX"]).dead_queue
    with stack.client() as client:
        jobs = [submit(client, "slow_fail", {"seconds": 2})["id"] for _ in range(4)]
        for job_id in jobs:
            wait_for_status(client, job_id, {"running"})
        own_broker.stop_app()  # takes about 5 s: the handlers fail meanwhile
        own_broker.start_app()
        for job_id in jobs:
            assert wait_for_status(client, job_id, timeout_s=60)["status"] == "failed"

        def all_dead() -> list[str] | None:
            dead = [h.get("x-job-id") for h in dead_letters(own_broker.management_url, dlq)]
            return dead if set(jobs) <= set(dead) else None

        dead = eventually(all_dead, 60, "every failed job in the DLQ")
        after = submit(client, "echo", {"text": "the broker is back"})
        assert wait_for_status(client, after["id"], timeout_s=60)["status"] == "succeeded"
    assert sorted(dead) == sorted(jobs)  # each once


def test_a_broker_restart_during_a_run_loses_no_job(
    stack: Stack, own_broker: PrivateRabbit
) -> None:
    on_own_broker(stack, own_broker)
    stack.start("run")
    stack.wait_ready()
    with stack.client() as client:
        first = [submit(client, "nap", {"seconds": 1})["id"] for _ in range(10)]
        wait_for_status(client, first[0], {"running", "succeeded"})
        own_broker.stop_app()
        during = [submit(client, "echo", {"text": str(n)})["id"] for n in range(5)]
        own_broker.start_app()
        after = [submit(client, "echo", {"text": "after"})["id"] for _ in range(5)]
        done = [wait_for_status(client, job_id, timeout_s=120) for job_id in first + during + after]
        histories = [names(client, job_id) for job_id in first + during + after]
    assert {job["status"] for job in done} == {"succeeded"}
    assert all(h.count("Succeeded") == 1 for h in histories)


def test_a_job_longer_than_the_consumer_timeout_completes_exactly_once(
    stack: Stack, own_broker: PrivateRabbit
) -> None:
    """The broker takes the message back from a consumer that holds it past
    consumer_timeout (2 s here, checked every second); the job goes on where it runs,
    and the copy that comes back waits for it."""
    for key, value in {"consumer_timeout": "2000", "channel_tick_interval": "1000"}.items():
        own_broker.ctl("eval", f"application:set_env(rabbit, {key}, {value}).")
    on_own_broker(stack, own_broker)
    start_workers(stack)
    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 8})
        done = wait_for_status(client, job["id"], timeout_s=60)
        history = names(client, job["id"])
    assert done["status"] == "succeeded"
    assert history.count("Started") == 1 and history.count("Succeeded") == 1
    assert "AttemptFailed" not in history


def test_a_worker_stopped_while_postgresql_is_unreachable_stops_and_its_job_completes(
    stack: Stack,
) -> None:
    """Its stopped attempt cannot be recorded: it still exits (it waited for ever for
    the database), and the attempt is recovered by another worker."""
    with TcpProxy(PG["host"], int(PG["port"])) as postgres:
        [cut_off] = start_workers(
            stack,
            JOBLEDGER_POSTGRES__PORT=str(postgres.port),
            JOBLEDGER_WORKER__SHUTDOWN_TIMEOUT_S="1",
        )
        with stack.client() as client:
            job = submit(client, "nap", {"seconds": 20})
            wait_for_status(client, job["id"], {"running"})
            postgres.close()  # the worker's database is gone, and stays gone
            began = time.monotonic()
            cut_off.send_signal(signal.SIGTERM)
            code = cut_off.wait(timeout=60)
            took = time.monotonic() - began
            start_workers(stack)
            client.post(f"/jobs/{job['id']}/cancel")  # no need to wait 20 s for the proof
            done = wait_for_status(client, job["id"], timeout_s=60)
    # It takes ~18 s on a quiet machine (1 s drain, 10 s to record, the ledger's close);
    # what is tested is that it exits at all: before, it waited for the database for ever.
    assert took < 45, took
    assert code == 0
    assert done["status"] == "cancelled"
