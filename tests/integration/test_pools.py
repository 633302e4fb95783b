"""Pools: `jobledger run` serves every pool the app registers, and one worker process
consumes several with `--pool a,b`."""

from __future__ import annotations

from tests.integration.conftest import (
    Stack,
    consumer_count,
    declared_consumer_count,
    eventually,
    submit,
    wait_for_status,
)


def test_run_serves_every_pool_the_app_registers(running: Stack) -> None:
    with running.client() as client:
        side = submit(client, "side_echo", {"text": "over there"})
        done = wait_for_status(client, side["id"], timeout_s=20)
    assert done["status"] == "succeeded"
    assert done["result"] == {"echo": "over there", "pool": "side"}


def test_a_worker_consumes_every_pool_it_is_given(stack: Stack) -> None:
    stack.start("run", JOBLEDGER_WORKER__POOL="elsewhere")  # a pool named: only that one
    stack.wait_ready()
    assert declared_consumer_count(stack, "side") == 0
    stack.start("worker", "--pool", "default, side")
    eventually(
        lambda: consumer_count(stack) >= 1 and consumer_count(stack, "side") >= 1,
        60,
        "a consumer on both pools",
    )
    with stack.client() as client:
        jobs = [submit(client, "echo", {"text": "a"}), submit(client, "side_echo", {"text": "b"})]
        finished = [wait_for_status(client, job["id"]) for job in jobs]
        workers = client.get("/workers").json()
    assert [job["status"] for job in finished] == ["succeeded", "succeeded"]
    pools = {w["pool"] for w in workers if w["pool"] in ("default", "side")}
    assert pools == {"default", "side"}  # one worker each, in one process


def test_jobs_waiting_in_a_pool_no_worker_serves_are_logged(stack: Stack) -> None:
    stack.start(
        "run",
        JOBLEDGER_WORKER__POOL="elsewhere",
        JOBLEDGER_OBSERVABILITY__QUEUE_DEPTH_INTERVAL_S="0.2",
        JOBLEDGER_OBSERVABILITY__UNSERVED_POOL_WARNING_S="1",
    )
    stack.wait_ready()
    log = stack.logs[0]
    with stack.client() as client:
        job = submit(client, "echo", {"text": "waiting"})
        warning = eventually(
            lambda: next(
                (line for line in log.read_text().splitlines() if "no consumer" in line), None
            ),
            30,
            "the warning",
        )
        assert "WARNING" in warning and "no worker serves pool 'default'" in warning
        assert "jobledger worker --pool default" in warning
        stack.start("worker")
        assert wait_for_status(client, job["id"])["status"] == "succeeded"
    assert log.read_text().count("no consumer") == 1  # once, not every sample
