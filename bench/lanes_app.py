"""Job types of bench/lanes.py (``--app bench.lanes_app``): a no-op, and one that asks
for a retry two seconds later on its first attempt."""

from __future__ import annotations

from pydantic import BaseModel

from consumers import JobContext, JobRegistry, Retry

registry = JobRegistry()


class NoopParams(BaseModel):
    n: int = 0


@registry.job("noop")
async def noop(ctx: JobContext, params: NoopParams) -> None:
    return None


@registry.job("retry_once")
async def retry_once(ctx: JobContext, params: NoopParams) -> None:
    if ctx.attempt == 1:
        raise Retry("once", delay_s=2)
