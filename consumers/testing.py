"""Run a job type's handler in-process, with no services, and record what it did.

    from consumers.testing import run_job
    run = run_job(registry, "segment", {"scan_id": "s1"})
    assert run.result == {...}
    assert run.progress[-1] == (100, "store masks")

The params are validated exactly as the gateway and the worker validate them, so
a test also proves what a client may submit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from consumers.context import JobContext
from consumers.registry import JobRegistry


@dataclass
class RecordedRun:
    result: Any = None
    error: BaseException | None = None
    progress: list[tuple[int, str]] = field(default_factory=list)
    context: JobContext | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def run_job(
    registry: JobRegistry,
    job_type: str,
    params: dict[str, Any],
    *,
    case_id: str = "case-1",
    tenant: str = "tenant-1",
    attempt: int = 1,
    job_id: UUID | None = None,
    cancelled: bool = False,
) -> RecordedRun:
    """Validate ``params``, run the handler to its end, and return what happened.
    Raises the registry's UnknownJobType or InvalidParams like the gateway would;
    an exception from the handler is recorded in ``error``, not raised."""
    kind = registry.get(job_type)
    model = kind.validate(params)
    run = RecordedRun()
    ctx = JobContext(
        job_id=job_id or uuid4(),
        job_type=job_type,
        attempt=attempt,
        tenant=tenant,
        case_id=case_id,
        correlation_id="test",
        logger=logging.getLogger(f"jobledger.test.{job_type}"),
        report=lambda percent, message: run.progress.append((percent, message)),
    )
    if cancelled:
        ctx.cancel()
    run.context = ctx
    try:
        if kind.is_async:
            run.result = asyncio.run(_awaited(kind.handler(ctx, model)))
        else:
            run.result = kind.handler(ctx, model)
    except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
        run.error = exc
    return run
