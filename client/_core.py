"""What the sync and async clients share: the requests they make, how answers are
read and errors raised, and the state of a followed stream. Neither does I/O here;
``client.sync`` and ``client.aio`` only send the calls and feed back the answers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    JobCancelled,
    JobFailed,
    NotFound,
    RateLimited,
    Rejected,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from client.models import HistoryEvent, Job, JobSpec, Schedule, StreamEvent, Submitted, rfc3339
from client.sse import SseParser

POSITION_HEADER = "X-Ledger-Position"
BATCH_LIMIT = 1000  # jobs in one POST /jobs/batch
USER_AGENT = "jobledger-client/0.1"
TRANSIENT = frozenset({502, 503, 504})  # a gateway restarting behind a proxy


@dataclass(frozen=True)
class Call:
    """One HTTP request, before it is sent."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Core:
    """A client's settings and what it has learnt: the highest ledger position its
    own writes reached, sent with listings so that they include those writes."""

    base_url: str
    token: str | None
    timeout: float
    position: int = 0

    def request(self, call: Call, timeout: httpx.Timeout | None = None) -> dict[str, Any]:
        """The keyword arguments of ``httpx.(Async)Client.request`` / ``.stream``."""
        headers = {"User-Agent": USER_AGENT, **call.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {
            "method": call.method,
            "url": self.base_url.rstrip("/") + call.path,
            "params": call.params or None,
            "json": call.json,
            "headers": headers,
            "timeout": timeout if timeout is not None else self.timeout,
        }

    def checked(self, response: httpx.Response) -> httpx.Response:
        """The response if it succeeded (its ledger position noted), else its error."""
        if response.status_code >= 400:
            raise error_of(response)
        position = response.headers.get(POSITION_HEADER, "")
        if position.isdigit():
            self.position = max(self.position, int(position))
        return response

    # What each operation sends.

    def submit(
        self,
        job_type: str,
        case_id: str,
        params: Mapping[str, Any] | None,
        idempotency_key: str | None,
        correlation_id: str | None,
        run_at: datetime | str | None = None,
        delay_s: float | None = None,
        priority: str | None = None,
    ) -> Call:
        headers = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if correlation_id is not None:
            headers["X-Correlation-ID"] = correlation_id
        body: dict[str, Any] = {"type": job_type, "case_id": case_id, "params": dict(params or {})}
        body.update(timing(run_at, delay_s))
        if priority is not None:
            body["priority"] = priority
        return Call("POST", "/jobs", json=body, headers=headers)

    def batches(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[tuple[int, Call]]:
        """``POST /jobs/batch`` calls of at most ``BATCH_LIMIT`` jobs, each with the
        index of its first job."""
        bodies = [spec_of(job).to_json() for job in jobs]
        return [
            (start, Call("POST", "/jobs/batch", json={"jobs": bodies[start : start + BATCH_LIMIT]}))
            for start in range(0, len(bodies), BATCH_LIMIT)
        ]

    def get(self, job_id: str, as_of: datetime | str | None = None) -> Call:
        params = {"as_of": rfc3339(as_of)} if as_of is not None else {}
        return Call("GET", f"/jobs/{_seg(job_id)}", params=params)

    def events(self, job_id: str, until: datetime | str | None = None) -> Call:
        params = {"until": rfc3339(until)} if until is not None else {}
        return Call("GET", f"/jobs/{_seg(job_id)}/events", params=params)

    def jobs(self, case_id: str, status: str | None, cursor: str | None, page_size: int) -> Call:
        params = {"limit": str(page_size)}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        headers = {POSITION_HEADER: str(self.position)} if self.position else {}
        return Call("GET", f"/jobs/{_seg(case_id)}/jobs", params=params, headers=headers)

    def cancel(self, job_id: str) -> Call:
        return Call("POST", f"/jobs/{_seg(job_id)}/cancel")

    def retry(self, job_id: str) -> Call:
        return Call("POST", f"/jobs/{_seg(job_id)}/retry")

    def add_schedule(self, name: str, cron: str, job_type: str, case_id: str, **opts: Any) -> Call:
        """``opts``: params, zone, catch_up, paused (absent: the gateway's defaults)."""
        body = {"name": name, "cron": cron, "type": job_type, "case_id": case_id}
        body.update({k: v for k, v in opts.items() if v is not None})
        return Call("POST", "/schedules", json=body)

    def schedules(self) -> Call:
        return Call("GET", "/schedules")

    def get_schedule(self, schedule_id: str) -> Call:
        return Call("GET", f"/schedules/{_seg(schedule_id)}")

    def change_schedule(self, schedule_id: str, **fields: Any) -> Call:
        """``fields``: cron, zone, type, case_id, params, catch_up, paused."""
        body = {k: v for k, v in fields.items() if v is not None}
        return Call("PATCH", f"/schedules/{_seg(schedule_id)}", json=body)

    def delete_schedule(self, schedule_id: str) -> Call:
        return Call("DELETE", f"/schedules/{_seg(schedule_id)}")

    def stream_timeout(self, read_s: float | None) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=read_s)


# Reading answers.


def submitted(response: httpx.Response) -> Submitted:
    job = Job.from_json(response.json())
    # A new job's write has a ledger position; the job an idempotency key named has none.
    created = POSITION_HEADER in response.headers
    return Submitted(job.id, job.type, job.case_id, job.status, created, job)


def batch_submitted(response: httpx.Response) -> list[Submitted]:
    return [
        Submitted(str(j["id"]), j["type"], j["case_id"], j["status"], bool(j["created"]))
        for j in response.json()["jobs"]
    ]


def job(response: httpx.Response) -> Job:
    return Job.from_json(response.json())


def schedule(response: httpx.Response) -> Schedule:
    return Schedule.from_json(response.json())


def schedules(response: httpx.Response) -> list[Schedule]:
    return [Schedule.from_json(s) for s in response.json()["schedules"]]


def history(response: httpx.Response) -> list[HistoryEvent]:
    return [HistoryEvent.from_json(e) for e in response.json()]


def page(response: httpx.Response) -> tuple[list[Job], str | None]:
    body = response.json()
    return [Job.from_json(j) for j in body["items"]], body.get("next_cursor")


def outcome(job: Job, events: Sequence[HistoryEvent]) -> dict[str, Any]:
    """A finished job's result, or its failure or cancellation as an error. ``events``
    (the job's history) are read only for a failed job: its traceback."""
    if job.status == "succeeded":
        return dict(job.result or {})
    if job.status == "cancelled":
        raise JobCancelled(job)
    if job.status == "failed":
        failed = [e for e in events if e.type == "AttemptFailed"]
        raise JobFailed(job, str(failed[-1].data.get("traceback", "")) if failed else "")
    raise ValueError(f"job {job.id} has not finished: {job.status}")


def error_of(response: httpx.Response) -> ApiError:
    """The typed error of an error response (its body already read)."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    status = response.status_code
    match status:
        case 401:
            return Unauthorized(status, body)
        case 403:
            return Forbidden(status, body)
        case 404:
            return NotFound(status, body)
        case 409:
            return Conflict(status, body)
        case 422:
            return Rejected(status, body)
        case 429:
            return RateLimited(status, body, _seconds(response.headers.get("Retry-After")))
    return ApiError(status, body)


def rebased(exc: ApiError, offset: int) -> ApiError:
    """A batch's refusal with each job's index counted from the start of the whole
    list rather than of the request that carried it."""
    if not isinstance(exc, Rejected) or not offset or not isinstance(exc.body, dict):
        return exc
    detail = []
    for error in exc.errors:
        loc = list(error.get("loc", []))
        if loc[:2] == ["body", "jobs"] and len(loc) > 2 and isinstance(loc[2], int):
            loc[2] += offset
        detail.append({**error, "loc": loc})
    return Rejected(exc.status, {**exc.body, "detail": detail})


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _seg(value: str) -> str:
    """A path segment, escaped: an id never reaches another route."""
    return quote(str(value), safe="")


def spec_of(job: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(job, JobSpec):
        return job
    return JobSpec(
        type=job["type"],
        case_id=job["case_id"],
        params=job.get("params") or {},
        idempotency_key=job.get("idempotency_key"),
        run_at=job.get("run_at"),
        delay_s=job.get("delay_s"),
        priority=job.get("priority"),
    )


def timing(run_at: datetime | str | None, delay_s: float | None) -> dict[str, Any]:
    """A submit's ``run_at`` or ``delay_s`` as the body carries them (the gateway
    refuses both at once, with its reason)."""
    body: dict[str, Any] = {}
    if run_at is not None:
        body["run_at"] = rfc3339(run_at)
    if delay_s is not None:
        body["delay_s"] = delay_s
    return body


def deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


# Following a job's stream.


class Follower:
    """The state of one ``progress()``: the last event delivered (its ledger
    position is the ``Last-Event-ID`` of the next connection, and anything at or
    before it is never delivered again), and how many connections in a row have
    failed. A stream the gateway ends after a terminal event is the end; one that
    ends before it, or breaks, is resumed after a pause that grows with each
    failure, and after ``max_failures`` in a row the follower gives up."""

    def __init__(
        self,
        core: Core,
        job_id: str,
        *,
        after: int | None = None,
        timeout: float | None = None,
        max_failures: int = 20,
        on_reconnect: Callable[[Exception | None, float], None] | None = None,
    ) -> None:
        self.core = core
        self.job_id = job_id
        self.last_id = after
        self.timeout = timeout
        self.deadline = deadline(timeout)
        self.max_failures = max_failures
        self.on_reconnect = on_reconnect
        self.failures = 0
        self.ended = False  # the last event delivered was terminal
        self._parser = SseParser()

    def request(self) -> dict[str, Any]:
        """The next connection: after the last event delivered."""
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        self._parser = SseParser()
        call = Call("GET", f"/jobs/{_seg(self.job_id)}/progress", headers=headers)
        return self.core.request(call, self.core.stream_timeout(self._remaining()))

    def opened(self, response: httpx.Response) -> Literal["read", "done", "again"]:
        """What to do with an answer: read the stream; stop, the job having finished
        with nothing after ``Last-Event-ID`` (204); or connect again, the gateway
        being unavailable for now. Any other error status raises (the caller reads
        its body first)."""
        if response.status_code == 200:
            return "read"
        if response.status_code == 204:
            self.ended = True
            return "done"
        if response.status_code in TRANSIENT:
            return "again"
        raise error_of(response)

    def feed(self, line: str) -> StreamEvent | None:
        """The event a line completes, unless it was delivered before."""
        self._remaining()
        sse = self._parser.feed(line)
        if sse is None or sse.id is None:
            return None
        if self.last_id is not None and sse.id <= self.last_id:
            return None
        event = StreamEvent.from_sse(sse.event, sse.id, sse.data)
        self.last_id, self.failures, self.ended = sse.id, 0, event.terminal
        return event

    def closed(self) -> float | None:
        """The stream ended cleanly: None if the job has, else the pause before the
        next connection."""
        if self.ended:
            return None
        return self._failed(None)

    def broken(self, exc: Exception | None) -> float:
        """The connection failed (or the gateway answered a transient error): the
        pause before the next one."""
        return self._failed(exc)

    def _failed(self, exc: Exception | None) -> float:
        self._remaining()
        self.failures += 1
        if self.failures >= self.max_failures:
            raise Unreachable(
                f"the stream of job {self.job_id} failed {self.failures} times in a row"
            ) from exc
        pause = min(0.25 * 2.0 ** (self.failures - 1), 5.0)
        remaining = self._remaining()
        pause = pause if remaining is None else min(pause, remaining)
        if self.on_reconnect is not None:
            self.on_reconnect(exc, pause)
        return pause

    def _remaining(self) -> float | None:
        """Seconds left before the deadline; past it, ``WaitTimeout``."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            assert self.timeout is not None
            raise WaitTimeout(self.job_id, self.timeout)
        return left
