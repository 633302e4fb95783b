"""The SSE latency benchmark's job type (``--app bench.sse_app``)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from consumers import JobContext, JobRegistry

registry = JobRegistry()


class TickerParams(BaseModel):
    reports: int = Field(default=50, ge=1, le=10_000)
    gap_s: float = Field(default=0.2, gt=0)


@registry.job("ticker")
async def ticker(ctx: JobContext, params: TickerParams) -> dict[str, int]:
    """Reports progress every ``gap_s`` (longer than the coalescing interval, so each
    report is written), with the wall-clock time of the call as its message."""
    for n in range(params.reports):
        ctx.progress(100 * n // params.reports, f"{time.time():.6f}")
        await asyncio.sleep(params.gap_s)
    return {"reports": params.reports}
