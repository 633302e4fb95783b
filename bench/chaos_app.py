"""Job types of the chaos run (bench/chaos.py). Each handler appends one line when it
starts and one when it ends to the file JOBLEDGER_CHAOS_LOG names (O_APPEND: a line is
never torn), so the run can count the handler's executions apart from the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from consumers import JobContext, JobRegistry, PermanentError, RetryPolicy

registry = JobRegistry()
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.5, factor=2.0, max_delay_s=2.0)


def _log(ctx: JobContext, event: str) -> None:
    path = os.environ.get("JOBLEDGER_CHAOS_LOG")
    if not path:
        return
    line = json.dumps({"job": str(ctx.job_id), "attempt": ctx.attempt, "event": event})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def _logged(ctx: JobContext, run: Callable[[], Awaitable[Any]]) -> Any:
    _log(ctx, "start")
    try:
        result = await run()
    except BaseException:
        _log(ctx, "end")
        raise
    _log(ctx, "end")
    return result


class Work(BaseModel):
    seconds: float = Field(ge=0, le=30)
    fail_attempts: int = Field(default=0, ge=0, le=10)


@registry.job("ok", retry=FAST_RETRY)
async def ok(ctx: JobContext, params: Work) -> dict[str, Any]:
    """Succeeds after ``seconds``, reporting progress on the way."""

    async def run() -> dict[str, Any]:
        steps = 3
        for step in range(steps):
            await asyncio.sleep(params.seconds / steps)
            ctx.progress(100 * (step + 1) // steps, f"step {step + 1}")
        return {"at": time.time()}

    return await _logged(ctx, run)  # type: ignore[no-any-return]


@registry.job("flaky", retry=FAST_RETRY)
async def flaky(ctx: JobContext, params: Work) -> dict[str, Any]:
    """Fails its first ``fail_attempts`` attempts with a retryable error."""

    async def run() -> dict[str, Any]:
        await asyncio.sleep(params.seconds)
        if ctx.attempt <= params.fail_attempts:
            raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
        return {"attempt": ctx.attempt}

    return await _logged(ctx, run)  # type: ignore[no-any-return]


@registry.job("doomed", retry=FAST_RETRY)
async def doomed(ctx: JobContext, params: Work) -> None:
    """Fails for good at once: the job belongs in the DLQ."""

    async def run() -> None:
        await asyncio.sleep(params.seconds)
        raise PermanentError("doomed on purpose")

    await _logged(ctx, run)


@registry.job("exhausted", retry=FAST_RETRY)
async def exhausted(ctx: JobContext, params: Work) -> None:
    """Fails every attempt with a retryable error until none is left: the DLQ."""

    async def run() -> None:
        await asyncio.sleep(params.seconds)
        raise RuntimeError("never works")

    await _logged(ctx, run)
