"""A small HTTP client: submit a job and show its progress live (from its SSE stream)."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from infra.watch import watch as watch_job


async def demo(url: str, headers: dict[str, str] | None = None) -> int:
    print(f"\njobledger is up: {url}/docs  (Ctrl-C to stop)\n", flush=True)
    params = {"scan_id": "scan-0001", "teeth": [11, 12, 21], "stage_s": 0.3}
    return await submit_and_watch(url, "segment", "demo-case", params, watch=True, headers=headers)


async def submit_many(
    url: str,
    job_type: str,
    case_id: str,
    params: dict[str, Any],
    count: int,
    headers: dict[str, str] | None = None,
) -> int:
    """``count`` jobs, through POST /jobs/batch, 1,000 to a request."""
    submitted = 0
    async with httpx.AsyncClient(base_url=url, headers=headers or {}, timeout=60) as client:
        while submitted < count:
            size = min(1000, count - submitted)
            job = {"type": job_type, "case_id": case_id, "params": params}
            response = await client.post("/jobs/batch", json={"jobs": [job] * size})
            if response.status_code != 202:
                print(f"submit refused: {response.status_code} {response.text}", file=sys.stderr)
                return 1
            submitted += size
    print(f"submitted {submitted} {job_type} jobs on case {case_id}", flush=True)
    return 0


async def submit_and_watch(
    url: str,
    job_type: str,
    case_id: str,
    params: dict[str, Any],
    *,
    watch: bool,
    headers: dict[str, str] | None = None,
) -> int:
    headers = headers or {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        response = await client.post(
            "/jobs", json={"type": job_type, "case_id": case_id, "params": params}
        )
    if response.status_code != 202:
        print(f"submit refused: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    job = response.json()
    print(f"submitted {job_type} job {job['id']} on case {case_id}: {job['status']}", flush=True)
    if not watch:
        return 0
    return await watch_job(url, job["id"], headers)
