"""Job types for the integration tests (``--app tests.integration.app``)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from consumers import JobContext, JobRegistry, PermanentError

registry = JobRegistry()


class EchoParams(BaseModel):
    text: str = Field(max_length=200)


@registry.job("echo")
async def echo(ctx: JobContext, params: EchoParams) -> dict[str, object]:
    ctx.progress(50, "echoing")
    return {"echo": params.text, "attempt": ctx.attempt}


class NapParams(BaseModel):
    seconds: float = Field(ge=0, le=30)


@registry.job("nap")
async def nap(ctx: JobContext, params: NapParams) -> dict[str, object]:
    steps = 10
    for step in range(1, steps + 1):
        await asyncio.sleep(params.seconds / steps)
        ctx.progress(100 * step / steps, f"nap {step}/{steps}")
    return {"slept": params.seconds}


class FailParams(BaseModel):
    message: str = "broken on purpose"
    permanent: bool = True


@registry.job("fail")
def fail(ctx: JobContext, params: FailParams) -> None:
    if params.permanent:
        raise PermanentError(params.message)
    raise RuntimeError(params.message)


class SpinParams(BaseModel):
    seconds: float = Field(ge=0, le=30)


@registry.job("spin")
def spin(ctx: JobContext, params: SpinParams) -> dict[str, object]:
    """A thread handler that reports progress until done or cancelled."""
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        ctx.progress(50, "spinning")
        time.sleep(0.05)
    return {"spun": params.seconds}
