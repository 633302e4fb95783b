"""The benchmark's job type: a no-op, like the peers' (``--app bench.noop_app``)."""

from __future__ import annotations

from pydantic import BaseModel

from consumers import JobContext, JobRegistry

registry = JobRegistry()


class NoopParams(BaseModel):
    n: int = 0


@registry.job("noop")
async def noop(ctx: JobContext, params: NoopParams) -> None:
    return None
