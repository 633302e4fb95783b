"""``jobledger history JOB_ID``: a job's history in the terminal, as an auditor reads
it: every event with its time, the time since the one before, the attempt, the actor,
the correlation and trace ids, and what the event says (errors, results, progress;
a failed attempt's traceback in full, under its line).
Read over HTTP with the Python client (``GET /jobs/{id}`` and its ``/events``), so
the token's tenant and scopes apply; ``--as-of`` shows it as it stood then."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO

from client import ApiError, Client, HistoryEvent, Job, Unreachable

DETAIL_MAX = 300  # characters of an event's data on its line


def history(
    url: str, job_id: str, token: str | None, *, as_of: str | None = None, out: TextIO
) -> int:
    """Print the history; 0, or 1 with the gateway's reason on stderr."""
    with Client(url, token, timeout=30) as jobs:
        try:
            job = jobs.get(job_id, as_of=as_of)
            events = jobs.events(job_id, until=as_of)
        except Unreachable as exc:
            print(f"the gateway at {url} is unreachable: {exc}", file=sys.stderr)
            return 1
        except ApiError as exc:
            print(f"{exc.status}: {_reason(exc.detail)}", file=sys.stderr)
            return 1
    for line in render(job, events, as_of=as_of):
        print(line, file=out)
    return 0


def render(job: Job, events: list[HistoryEvent], *, as_of: str | None) -> list[str]:
    when = f" as of {as_of}" if as_of else ""
    lines = [
        f"job {job.id}  {job.type}  case {job.case_id}  {job.status}{when}  "
        f"attempt {job.attempt}/{job.max_attempts}  correlation {job.correlation_id}",
        f"{'#':>3}  {'at (UTC)':<23}  {'after':>9}  {'event':<19}  {'att':>3}  "
        f"{'actor':<24}  {'trace':<32}  detail",
    ]
    previous: datetime | None = None
    for event in events:
        at = event.at
        after = "-" if previous is None else f"+{(at - previous).total_seconds():.3f}s"
        previous = at
        data = dict(event.data)
        raised = data.pop("traceback", "") or ""
        lines.append(
            f"{event.version:>3}  {at.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}  {after:>9}  "
            f"{event.type:<19}  {event.attempt:>3}  {event.actor:<24}  "
            f"{_trace_id(event.traceparent):<32}  {_detail(data)}"
        )
        # Where the attempt's handler raised, whole, under its line.
        lines.extend(f"       | {line}" for line in raised.rstrip("\n").splitlines())
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


def _reason(detail: Any) -> str:
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]
