"""``jobledger submit`` and the demo: submit jobs with the Python client and show a
job's progress live (from its SSE stream)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from client import ApiError, AsyncClient, JobSpec, Rejected, Unreachable
from infra.watch import watch as watch_job


async def demo(url: str, token: str | None = None) -> int:
    print(f"\njobledger is up: {url}/docs  (Ctrl-C to stop)\n", flush=True)
    params = {"scan_id": "scan-0001", "teeth": [11, 12, 21], "stage_s": 0.3}
    return await submit_and_watch(url, "segment", "demo-case", params, watch=True, token=token)


async def submit_and_watch(
    url: str,
    job_type: str,
    case_id: str,
    params: dict[str, Any],
    *,
    watch: bool,
    token: str | None = None,
    idempotency_key: str | None = None,
    run_at: str | None = None,
    delay_s: float | None = None,
    priority: str | None = None,
) -> int:
    async with AsyncClient(url, token) as jobs:
        try:
            handle = await jobs.submit(
                job_type,
                case_id,
                params,
                idempotency_key=idempotency_key,
                run_at=run_at,
                delay_s=delay_s,
                priority=priority,
            )
        except (ApiError, Unreachable) as exc:
            return _refused(exc)
    job = handle.submitted.job if handle.submitted else None
    status = job.status if job else "?"
    if job is not None and job.run_at is not None:
        status += f" until {job.run_at.isoformat()}"
    print(f"submitted {job_type} job {handle.id} on case {case_id}: {status}", flush=True)
    if not watch:
        return 0
    return await watch_job(url, handle.id, token)


async def submit_alike(
    url: str,
    job_type: str,
    case_id: str,
    params: dict[str, Any],
    count: int,
    token: str | None = None,
    run_at: str | None = None,
    delay_s: float | None = None,
    priority: str | None = None,
) -> int:
    """``count`` jobs alike, through POST /jobs/batch, 1,000 to a request."""
    spec = JobSpec(job_type, case_id, params, run_at=run_at, delay_s=delay_s, priority=priority)
    async with AsyncClient(url, token, timeout=60) as jobs:
        try:
            await jobs.submit_many(spec for _ in range(count))
        except (ApiError, Unreachable) as exc:
            return _refused(exc)
    print(f"submitted {count} {job_type} jobs on case {case_id}", flush=True)
    return 0


async def submit_ndjson(url: str, lines: Iterable[str], token: str | None = None) -> int:
    """Jobs read as NDJSON, one ``{"type", "case_id", "params", "idempotency_key", "priority"}``
    a line, through POST /jobs/batch; a line per job (id, type, case, status), then
    how many."""
    try:
        specs = [_spec(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    except ValueError as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return 1
    async with AsyncClient(url, token, timeout=60) as jobs:
        try:
            handles = await jobs.submit_many(specs)
        except (ApiError, Unreachable) as exc:
            return _refused(exc)
    known = 0
    for handle in handles:
        s = handle.submitted
        assert s is not None
        known += not s.created
        print(f"{s.id}  {s.type}  {s.case_id}  {s.status}" + ("" if s.created else "  (known)"))
    print(f"submitted {len(handles)} jobs ({known} known by their idempotency keys)", flush=True)
    return 0


def _spec(number: int, line: str) -> JobSpec:
    try:
        job = json.loads(line)
        return JobSpec(
            type=job["type"],
            case_id=job["case_id"],
            params=job.get("params") or {},
            idempotency_key=job.get("idempotency_key"),
            run_at=job.get("run_at"),
            delay_s=job.get("delay_s"),
            priority=job.get("priority"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f'line {number} is not a job {{"type", "case_id", "params"}}: {exc}'
        ) from None


def _refused(exc: Exception, err: TextIO = sys.stderr) -> int:
    if isinstance(exc, Rejected):
        print(f"submit refused: {exc.status} {exc.reason}", file=err)
    elif isinstance(exc, ApiError):
        print(f"submit refused: {exc}", file=err)
    else:
        print(f"submit: {exc}", file=err)
    return 1
