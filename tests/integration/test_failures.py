"""Workers that die, are stopped, or are told to stop: nothing is lost, nothing runs
twice, and every lost or interrupted attempt is in the ledger."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    Stack,
    eventually,
    kill_the_worker,
    start_workers,
    submit,
    wait_for_status,
)


def types(client: httpx.Client, job_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()]


@pytest.mark.faults
def test_a_worker_killed_mid_job_is_replaced_and_the_job_succeeds_exactly_once(
    stack: Stack,
) -> None:
    [doomed] = start_workers(stack)
    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 3})
        running = wait_for_status(client, job["id"], {"running"})
        kill_the_worker(stack, doomed)
        start_workers(stack)
        done = wait_for_status(client, job["id"], timeout_s=60)
        events = client.get(f"/jobs/{job['id']}/events").json()

    assert done["status"] == "succeeded"
    names = [e["type"] for e in events]
    assert names.count("Succeeded") == 1
    assert names.count("Started") == 2
    lost = next(e for e in events if e["type"] == "AttemptFailed")
    assert lost["data"]["error"].startswith("attempt 1 was lost")
    assert running["attempt"] == 1 and done["attempt"] == 2


@pytest.mark.faults
def test_a_handler_that_kills_its_worker_ends_failed_after_its_attempts(stack: Stack) -> None:
    start_workers(stack, "--processes", "2")  # the supervisor restarts what dies
    with stack.client() as client:
        job = submit(client, "crash", {})
        done = wait_for_status(client, job["id"], timeout_s=90)
        names = types(client, job["id"])
        listed = eventually(lambda: client.get("/dlq").json(), 20, "the dead letter")
        after = submit(client, "echo", {"text": "workers are back"})
        assert wait_for_status(client, after["id"])["status"] == "succeeded"

    assert done["status"] == "failed" and done["attempt"] == 2
    assert names.count("Started") == 2
    assert names[-2:] == ["AttemptFailed", "Failed"]
    assert "lost" in done["error"]
    assert listed[0]["job_id"] == job["id"]


@pytest.mark.parametrize(
    ("job_type", "params"),
    [("nap", {"seconds": 20}), ("spin", {"seconds": 20}), ("burn", {"seconds": 20})],
    ids=["async", "thread", "process"],
)
def test_cancelling_a_running_job_stops_it(
    stack: Stack, job_type: str, params: dict[str, Any]
) -> None:
    start_workers(stack)
    with stack.client() as client:
        job = submit(client, job_type, params)
        wait_for_status(client, job["id"], {"running"})
        asked = time.monotonic()
        response = client.post(f"/jobs/{job['id']}/cancel")
        assert response.status_code == 200 and response.json()["cancel_requested"]
        done = wait_for_status(client, job["id"], timeout_s=10)
        took = time.monotonic() - asked
        names = types(client, job["id"])

    assert done["status"] == "cancelled"
    assert names[-2:] == ["CancelRequested", "Cancelled"]
    assert took < 10  # a functional bound; the latency is measured by bench/cancel_latency.py


def test_a_cancel_outlives_a_worker_restart(stack: Stack) -> None:
    [first] = start_workers(stack)
    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 20})
        wait_for_status(client, job["id"], {"running"})
        kill_the_worker(stack, first)  # no worker hears the cancel broadcast
        client.post(f"/jobs/{job['id']}/cancel")
        start_workers(stack)
        done = wait_for_status(client, job["id"], timeout_s=60)
    assert done["status"] == "cancelled"


def test_sigterm_lets_short_jobs_finish_and_hands_long_ones_to_another_worker(
    stack: Stack,
) -> None:
    [leaving] = start_workers(stack, JOBLEDGER_WORKER__SHUTDOWN_TIMEOUT_S="1")
    with stack.client() as client:
        short = submit(client, "nap", {"seconds": 0.5})
        long = submit(client, "nap", {"seconds": 6})
        wait_for_status(client, long["id"], {"running"})
        wait_for_status(client, short["id"], {"running", "succeeded"})
        assert stack.stop(leaving) == 0
        assert client.get(f"/jobs/{short['id']}").json()["status"] == "succeeded"
        interrupted = client.get(f"/jobs/{long['id']}").json()
        start_workers(stack)
        done = wait_for_status(client, long["id"], timeout_s=60)
        names = types(client, long["id"])

    assert interrupted["status"] == "retry_scheduled"
    assert done["status"] == "succeeded"
    assert names.count("AttemptInterrupted") == 1 and names.count("Succeeded") == 1
    assert done["attempt"] == 2  # the interrupted attempt did not use up the budget


def test_time_and_memory_limits_fail_the_attempt_with_a_clear_reason(stack: Stack) -> None:
    start_workers(stack)
    with stack.client() as client:
        soft = submit(client, "dawdle", {"seconds": 10})
        hard = submit(client, "stubborn", {"seconds": 30})
        memory = submit(client, "hog", {"megabytes": 1024})
        outcomes = {
            name: wait_for_status(client, job["id"], {"failed", "retry_scheduled"}, 60)
            for name, job in [("soft", soft), ("hard", hard), ("memory", memory)]
        }

    assert outcomes["soft"]["error"] == "time limit of 1s exceeded"
    assert outcomes["hard"]["error"] == "hard time limit of 2s exceeded"
    assert outcomes["memory"]["error"] == "memory limit of 300 MB exceeded"


def test_a_second_sigterm_stops_a_worker_at_once_and_its_job_still_completes(
    stack: Stack,
) -> None:
    [leaving] = start_workers(stack)
    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 20})
        wait_for_status(client, job["id"], {"running"})
        leaving.send_signal(signal.SIGTERM)
        eventually(lambda: "stopping" in stack.logs[-1].read_text(), 10, "the first signal")
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(timeout=5) != 0
        start_workers(stack, JOBLEDGER_WORKER__CONCURRENCY="1")
        client.post(f"/jobs/{job['id']}/cancel")  # no need to wait 20 s for the proof
        done = wait_for_status(client, job["id"], timeout_s=60)
        names = types(client, job["id"])
    assert done["status"] == "cancelled"
    assert names.count("Started") == 1
    assert names[-2:] in (["CancelRequested", "Cancelled"], ["AttemptFailed", "Cancelled"])
