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
