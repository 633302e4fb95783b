"""``jobledger watch``: a job's live progress in the terminal, from its SSE stream.

A dropped stream (a network error, or the gateway cutting off a reader that fell
behind) is resumed with ``Last-Event-ID``: nothing is shown twice or skipped."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

TERMINAL_TYPES = {"Succeeded", "Failed", "Cancelled"}
MAX_FAILURES = 20  # consecutive failed connections, 0.5 s apart, before giving up


@dataclass(frozen=True)
class SseEvent:
    id: int | None
    event: str
    data: Any


@dataclass
class SseParser:
    """Server-Sent Events, one line at a time (without its line ending)."""

    _fields: dict[str, str] = field(default_factory=dict)
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._data:
                self._fields.clear()
                return None
            event = SseEvent(
                id=int(self._fields["id"]) if self._fields.get("id", "").isdigit() else None,
                event=self._fields.get("event", "message"),
                data=json.loads("\n".join(self._data)),
            )
            self._fields, self._data = {}, []
            return event
        if line.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None


def bearer(token: str) -> dict[str, str]:
    """The headers a command-line client sends: a bearer token when it has one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class Display:
    """Prints each event as a line; on a terminal, progress redraws one line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.redrawing = False

    def show(self, event: dict[str, Any]) -> None:
        line = f"  {event['at'][11:23]}  {describe(event)}"
        if self.live and event["type"] == "ProgressReported":
            self.out.write(f"\r{line}\x1b[K")
            self.redrawing = True
        else:
            if self.redrawing:
                self.out.write("\n")
            self.out.write(f"{line}\n")
            self.redrawing = False
        self.out.flush()


async def watch(
    url: str,
    job_id: str,
    headers: dict[str, str],
    *,
    out: TextIO = sys.stdout,
    on_event: Callable[[SseEvent], None] | None = None,
) -> int:
    """Show the job's events until it ends: 0 if it succeeded, 1 if it failed or was
    cancelled, 2 if there is no such job, 3 if the gateway stays unreachable."""
    display = Display(out)
    last_id: int | None = None
    failures = 0
    timeout = httpx.Timeout(10, read=None)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as client:
        while True:
            resume = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
            try:
                async with client.stream(
                    "GET", f"/jobs/{job_id}/progress", headers=resume
                ) as response:
                    if response.status_code == 204:
                        return await _finished(client, job_id, out)
                    if response.status_code != 200:
                        await response.aread()
                        print(f"watch: {response.status_code} {response.text}", file=sys.stderr)
                        return 2
                    parser = SseParser()
                    # A history may hold an earlier end (failed, then retried): the job
                    # has ended when the server closes the stream after a terminal event.
                    ended: dict[str, Any] | None = None
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        last_id = event.id if event.id is not None else last_id
                        failures = 0
                        if on_event is not None:
                            on_event(event)
                        display.show(event.data)
                        ended = event.data if event.data["type"] in TERMINAL_TYPES else None
                    if ended is not None:
                        return _outcome(ended, out)
            except httpx.TransportError as exc:
                failures += 1
                if failures >= MAX_FAILURES:
                    print(f"watch: the gateway is unreachable ({exc})", file=sys.stderr)
                    return 3
                print(f"watch: stream interrupted ({exc}); resuming", file=sys.stderr)
            await asyncio.sleep(0.5)


def _outcome(event: dict[str, Any], out: TextIO) -> int:
    result = event["data"].get("result")
    line = f"job {event['job_id']} {event['status']}" + (f": {result}" if result else "")
    print(line, file=out, flush=True)
    return 0 if event["status"] == "succeeded" else 1


async def _finished(client: httpx.AsyncClient, job_id: str, out: TextIO) -> int:
    job = (await client.get(f"/jobs/{job_id}")).json()
    result = job.get("result")
    print(f"job {job_id} {job['status']}" + (f": {result}" if result else ""), file=out)
    return 0 if job["status"] == "succeeded" else 1


def describe(event: dict[str, Any]) -> str:
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
