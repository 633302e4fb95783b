"""A supervised component that keeps failing is restarted with a growing backoff,
capped; once it has run well, its next restart is quick again (a dispatcher that lost
the broker for a minute resumes as soon as the broker is back)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from infra.bootstrap import supervise


async def test_the_backoff_grows_is_capped_and_starts_over_after_a_healthy_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopping = asyncio.Event()
    # How long each run lasts before it fails: four quick failures, a healthy run,
    # one more quick failure; the seventh run stops the test.
    runs = [0.0, 0.0, 0.0, 0.0, 0.6, 0.0]
    started = 0

    async def run() -> None:
        nonlocal started
        started += 1
        if started > len(runs):
            stopping.set()
            return
        await asyncio.sleep(runs[started - 1])
        raise ConnectionError("the broker is gone")

    with caplog.at_level(logging.ERROR, logger="jobledger"):
        await asyncio.wait_for(
            supervise(
                "component",
                run,
                stopping,
                first_backoff_s=0.01,
                max_backoff_s=0.04,
                healthy_run_s=0.5,
            ),
            10,
        )

    backoffs = [r.args[2] for r in caplog.records if r.msg.startswith("%s stopped")]  # type: ignore[index]
    assert backoffs == [0.01, 0.02, 0.04, 0.04, 0.01, 0.02]


async def test_a_stop_ends_a_run_that_swallowed_its_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run whose first cancel a library swallowed (caught, not re-raised: the task
    goes on as if none came) is cancelled again, and the stop ends. Seen in a test's
    `jobledger run` stopped while its dispatcher started: the dispatcher went on into
    its loop and held the stop until the process was killed."""
    stopping = asyncio.Event()
    running = asyncio.Event()
    cancels = 0

    async def run() -> None:
        nonlocal cancels
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancels += 1  # swallowed, as the library did
        try:
            await asyncio.Event().wait()  # on into its loop
        except asyncio.CancelledError:
            cancels += 1
            raise

    supervising = asyncio.create_task(supervise("component", run, stopping, cancel_again_s=0.05))
    await running.wait()
    stopping.set()
    with caplog.at_level(logging.WARNING, logger="jobledger"):
        await asyncio.wait_for(supervising, 5)
    assert cancels == 2
    assert any("still runs" in r.getMessage() for r in caplog.records)
