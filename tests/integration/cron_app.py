"""A job app with a schedule declared in code (``--app tests.integration.cron_app``)."""

from __future__ import annotations

from pydantic import BaseModel

from consumers import JobContext, JobRegistry

registry = JobRegistry()


class NoParams(BaseModel):
    pass


@registry.job("heartbeat", schedule="* * * * * *", schedule_zone="Europe/Berlin")
async def heartbeat(ctx: JobContext, params: NoParams) -> None:
    pass


class EchoParams(BaseModel):
    text: str


@registry.job("echo")
async def echo(ctx: JobContext, params: EchoParams) -> None:
    pass
