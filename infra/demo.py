"""A small HTTP client: submit a job and print its history as it is written."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


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
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as client:
        response = await client.post(
            "/jobs", json={"type": job_type, "case_id": case_id, "params": params}
        )
        if response.status_code != 202:
            print(f"submit refused: {response.status_code} {response.text}", file=sys.stderr)
            return 1
        job = response.json()
        print(
            f"submitted {job_type} job {job['id']} on case {case_id}: {job['status']}", flush=True
        )
        if not watch:
            return 0
        return await _watch(client, job["id"])


async def _watch(client: httpx.AsyncClient, job_id: str) -> int:
    seen = 0
    while True:
        events = (await client.get(f"/jobs/{job_id}/events")).json()
        for event in events[seen:]:
            print(f"  {event['at'][11:23]}  {_describe(event)}", flush=True)
        seen = len(events)
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in TERMINAL and seen >= 1:
            print(f"job {job_id} {job['status']}" + (f": {job['result']}" if job["result"] else ""))
            return 0 if job["status"] == "succeeded" else 1
        await asyncio.sleep(0.1)


def _describe(event: dict[str, Any]) -> str:
    data = event["data"]
    match event["type"]:
        case "ProgressReported":
            bar = "#" * (data["percent"] // 5)
            return f"progress   [{bar:<20}] {data['percent']:3d}%  {data['message']}"
        case "Started":
            return f"started    attempt {event['attempt']} on {data['worker_id']}"
        case "Failed" | "AttemptFailed":
            return f"{event['type'].lower():<10} {data['error']}"
        case _:
            return f"{event['type'].lower():<10} by {event['actor']}"
