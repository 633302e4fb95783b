"""``jobledger history JOB_ID``: a job's history in the terminal, as an auditor reads
it: every event with its time, the time since the one before, the attempt, the actor,
the correlation and trace ids, and what the event says (errors, results, progress).
Read over HTTP (``GET /jobs/{id}/events``), so the token's tenant and scopes apply;
``--as-of`` shows it as it stood then."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO

import httpx

DETAIL_MAX = 300  # characters of an event's data on its line


def history(
    url: str, job_id: str, headers: dict[str, str], *, as_of: str | None = None, out: TextIO
) -> int:
    """Print the history; 0, or 1 with the gateway's reason on stderr."""
    job_params = {"as_of": as_of} if as_of else {}
    event_params = {"until": as_of} if as_of else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        try:
            job = client.get(f"/jobs/{job_id}", params=job_params)
            events = client.get(f"/jobs/{job_id}/events", params=event_params)
        except httpx.HTTPError as exc:
            print(f"the gateway at {url} is unreachable: {exc}", file=sys.stderr)
            return 1
    for response in (job, events):
        if response.status_code != 200:
            print(f"{response.status_code}: {_reason(response)}", file=sys.stderr)
            return 1
    for line in render(job.json(), events.json(), as_of=as_of):
        print(line, file=out)
    return 0


def render(job: dict[str, Any], events: list[dict[str, Any]], *, as_of: str | None) -> list[str]:
    when = f" as of {as_of}" if as_of else ""
    lines = [
        f"job {job['id']}  {job['type']}  case {job['case_id']}  {job['status']}{when}  "
        f"attempt {job['attempt']}/{job['max_attempts']}  correlation {job['correlation_id']}",
        f"{'#':>3}  {'at (UTC)':<23}  {'after':>9}  {'event':<19}  {'att':>3}  "
        f"{'actor':<24}  {'trace':<32}  detail",
    ]
    previous: datetime | None = None
    for event in events:
        at = datetime.fromisoformat(event["at"])
        after = "-" if previous is None else f"+{(at - previous).total_seconds():.3f}s"
        previous = at
        lines.append(
            f"{event['version']:>3}  {at.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}  {after:>9}  "
            f"{event['type']:<19}  {event['attempt']:>3}  {event['actor']:<24}  "
            f"{_trace_id(event['traceparent']):<32}  {_detail(event['data'])}"
        )
    return lines


def _trace_id(traceparent: str) -> str:
    """The trace id of a W3C traceparent (version-traceid-spanid-flags), or '-'."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else "-"  # version, trace id, span id, flags


def _detail(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(", ", ": "), default=str)
    if text == "{}":
        return ""
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200]
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]
