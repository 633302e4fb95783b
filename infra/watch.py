"""``jobledger watch``: a job's live progress in the terminal, from its SSE stream,
followed with the Python client (``handle.progress()``), which resumes a dropped
stream by ``Last-Event-ID``: nothing is shown twice or skipped."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from client import ApiError, AsyncClient, Job, StreamEvent, Unreachable


def bearer(token: str) -> dict[str, str]:
    """The headers a command-line client sends: a bearer token when it has one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class Display:
    """Prints each event as a line; on a terminal, progress redraws one line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.redrawing = False

    def show(self, event: StreamEvent) -> None:
        line = f"  {event.at.strftime('%H:%M:%S.%f')[:12]}  {describe(event)}"
        if self.live and event.type == "ProgressReported":
            self.out.write(f"\r{line}\x1b[K")
            self.redrawing = True
        else:
            if self.redrawing:
                self.out.write("\n")
            self.out.write(f"{line}\n")
            self.redrawing = False
        self.out.flush()


async def watch(url: str, job_id: str, token: str | None, *, out: TextIO = sys.stdout) -> int:
    """Show the job's events until it ends: 0 if it succeeded, 1 if it failed or was
    cancelled, 2 if the gateway refuses (no such job, a token without the scope), 3
    if it stays unreachable."""
    display = Display(out)
    async with AsyncClient(url, token) as jobs:
        handle = jobs.handle(job_id)
        last: StreamEvent | None = None
        try:
            async for event in handle.progress(on_reconnect=_resuming):
                display.show(event)
                last = event
            if last is None or not last.terminal:  # nothing after Last-Event-ID
                return _finished(await handle.get(), out)
        except ApiError as exc:
            print(f"watch: {exc}", file=sys.stderr)
            return 2
        except Unreachable as exc:
            print(f"watch: the gateway is unreachable ({exc})", file=sys.stderr)
            return 3
    return _outcome(last.job_id, last.status, last.data.get("result"), out)


def _resuming(error: Exception | None, pause: float) -> None:
    why = f" ({error})" if error is not None else ""
    print(f"watch: stream interrupted{why}; resuming in {pause:g} s", file=sys.stderr)


def _finished(job: Job, out: TextIO) -> int:
    return _outcome(job.id, job.status, job.result, out)


def _outcome(job_id: str, status: str, result: Any, out: TextIO) -> int:
    print(f"job {job_id} {status}" + (f": {result}" if result else ""), file=out, flush=True)
    return 0 if status == "succeeded" else 1


def describe(event: StreamEvent) -> str:
    data = event.data
    match event.type:
        case "ProgressReported":
            bar = "#" * (data["percent"] // 5)
            return f"progress   [{bar:<20}] {data['percent']:3d}%  {data['message']}"
        case "Started":
            return f"started    attempt {event.attempt} on {data['worker_id']}"
        case "Failed" | "AttemptFailed":
            return f"{event.type.lower():<10} {data['error']}"
        case "Submitted" if data.get("run_at"):
            return f"submitted  by {event.actor}, scheduled for {data['run_at']}"
        case "HandedOver":
            return f"handed over to the delay queues, to start at {data['run_at']}"
        case _:
            return f"{event.type.lower():<10} by {event.actor}"
