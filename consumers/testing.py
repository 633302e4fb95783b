"""Run a job type's handler in-process, with no services, and record what it did.

    from consumers.testing import run_job
    run = run_job(registry, "segment", {"scan_id": "s1"})
    assert run.result == {...}
    assert run.progress[-1] == (100, "store masks")

The params are validated exactly as the gateway and the worker validate them (unknown
fields refused), and the result is recorded as the ledger stores it, so a test also
proves what a client may submit and what the worker will accept back. In an async
test, ``await run_job_async(...)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from consumers.context import JobContext
from consumers.execution import result_dict
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
    """Validate ``params`` as the gateway does (unknown fields refused; UnknownJobType
    or InvalidParams raised where it answers 422), run the handler to its end with the
    params the worker passes, and record its result as the ledger stores it (None is
    ``{}``; a result that is not JSON fails the run for good, as the worker fails the
    job). An exception from the handler is recorded in ``error``, not raised. Inside a
    running event loop (an async test), use ``run_job_async``."""
    run, call = _prepared(registry, job_type, params, case_id, tenant, attempt, job_id, cancelled)
    kind = registry.get(job_type)
    try:
        returned = asyncio.run(_awaited(call())) if kind.is_async else call()
        run.result = result_dict(returned)
    except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
        run.error = exc
    return run


async def run_job_async(
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
    """``run_job`` for async tests: an async handler runs on the test's own loop, a
    blocking one in a thread, as the worker runs them."""
    run, call = _prepared(registry, job_type, params, case_id, tenant, attempt, job_id, cancelled)
    kind = registry.get(job_type)
    try:
        returned = await call() if kind.is_async else await asyncio.to_thread(call)
        run.result = result_dict(returned)
    except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
        run.error = exc
    return run


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _prepared(
    registry: JobRegistry,
    job_type: str,
    params: dict[str, Any],
    case_id: str,
    tenant: str,
    attempt: int,
    job_id: UUID | None,
    cancelled: bool,
) -> tuple[RecordedRun, Callable[[], Any]]:
    kind = registry.get(job_type)
    # What the gateway accepts and stores, then what the worker validates from it.
    submitted = registry.validate(job_type, params)
    model = kind.validate(submitted)
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
    return run, lambda: kind.handler(ctx, model)
