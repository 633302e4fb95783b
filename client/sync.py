"""The blocking client: ``Client`` and the ``JobHandle`` it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from client import _core
from client.errors import ApiError, Unreachable
from client.models import HistoryEvent, Job, JobSpec, Schedule, StreamEvent, Submitted


class Client:
    """A jobledger gateway, over HTTP.

    ``base_url`` is the gateway's (``http://127.0.0.1:8000``), ``token`` the bearer
    token sent with every request, ``timeout`` the seconds a request may take (a
    stream may stay quiet for as long as it likes). Pass ``http`` to use an
    ``httpx.Client`` of your own (proxies, certificates, a transport); the client
    then leaves it open when it closes."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._core = _core.Core(base_url, token, timeout)
        self._owned = http is None
        self._http = http if http is not None else httpx.Client()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def submit(
        self,
        job_type: str,
        case_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        run_at: datetime | str | None = None,
        delay_s: float | None = None,
        priority: str | None = None,
    ) -> JobHandle:
        """Submit a job (``POST /jobs``). With an ``idempotency_key`` used before, the
        handle is the earlier job's (``handle.created`` is False). ``run_at`` (an aware
        datetime or RFC 3339) or ``delay_s``: the job is ``scheduled`` until then.
        ``priority`` (high, normal, low) overrides the job type's."""
        call = self._core.submit(
            job_type, case_id, params, idempotency_key, correlation_id, run_at, delay_s, priority
        )
        return JobHandle(self, _core.submitted(self._send(call)))

    def submit_many(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[JobHandle]:
        """Submit jobs through ``POST /jobs/batch``, in order, a request per 1,000.
        Each request is all or none; when a later one is refused the earlier ones
        stay submitted (give every job an ``idempotency_key`` to send them again
        safely). A ``Rejected`` names the refused jobs by their index in ``jobs``."""
        handles: list[JobHandle] = []
        for offset, call in self._core.batches(jobs):
            try:
                response = self._send(call)
            except ApiError as exc:
                raise _core.rebased(exc, offset) from None
            handles += [JobHandle(self, s) for s in _core.batch_submitted(response)]
        return handles

    def handle(self, job_id: str) -> JobHandle:
        """A handle on a job submitted earlier (no request is made)."""
        return JobHandle(self, str(job_id))

    def get(self, job_id: str, *, as_of: datetime | str | None = None) -> Job:
        """The job now, read from the ledger; or as it was at ``as_of``."""
        return _core.job(self._send(self._core.get(str(job_id), as_of)))

    def events(self, job_id: str, *, until: datetime | str | None = None) -> list[HistoryEvent]:
        """The job's history in order (up to ``until``)."""
        return _core.history(self._send(self._core.events(str(job_id), until)))

    def jobs(
        self, case_id: str, *, status: str | None = None, page_size: int = 50
    ) -> Iterator[Job]:
        """The case's jobs, newest first, page after page as the iterator is read;
        ``status`` filters. They include every job this client has submitted."""
        cursor: str | None = None
        while True:
            items, cursor = _core.page(
                self._send(self._core.jobs(case_id, status, cursor, page_size))
            )
            yield from items
            if cursor is None:
                return

    def add_schedule(
        self,
        name: str,
        cron: str,
        job_type: str,
        case_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        zone: str | None = None,
        catch_up: str | None = None,
        paused: bool | None = None,
    ) -> Schedule:
        """A job of ``job_type`` on ``case_id`` at each tick of ``cron`` in ``zone``
        (default UTC); ``catch_up``: all, latest (default) or none."""
        call = self._core.add_schedule(
            name,
            cron,
            job_type,
            case_id,
            params=dict(params) if params is not None else None,
            zone=zone,
            catch_up=catch_up,
            paused=paused,
        )
        return _core.schedule(self._send(call))

    def schedules(self) -> list[Schedule]:
        """The tenant's schedules, by name."""
        return _core.schedules(self._send(self._core.schedules()))

    def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule with its history (every change and tick fired)."""
        return _core.schedule(self._send(self._core.get_schedule(str(schedule_id))))

    def change_schedule(self, schedule_id: str, **fields: Any) -> Schedule:
        """Change only the fields given: cron, zone, type, case_id, params, catch_up."""
        call = self._core.change_schedule(str(schedule_id), **fields)
        return _core.schedule(self._send(call))

    def pause_schedule(self, schedule_id: str) -> Schedule:
        return self.change_schedule(schedule_id, paused=True)

    def resume_schedule(self, schedule_id: str) -> Schedule:
        return self.change_schedule(schedule_id, paused=False)

    def delete_schedule(self, schedule_id: str) -> None:
        self._send(self._core.delete_schedule(str(schedule_id)))

    def _send(self, call: _core.Call) -> httpx.Response:
        try:
            response = self._http.request(**self._core.request(call))
        except httpx.TransportError as exc:
            raise Unreachable(f"{call.method} {call.path}: {exc}") from exc
        return self._core.checked(response)

    def _follow(self, follower: _core.Follower) -> Generator[StreamEvent, None, None]:
        while True:
            pause: float | None
            try:
                with self._http.stream(**follower.request()) as response:
                    if response.status_code != 200:
                        response.read()
                    match follower.opened(response):
                        case "done":
                            return
                        case "again":
                            pause = follower.broken(None)
                        case "read":
                            for line in response.iter_lines():
                                event = follower.feed(line)
                                if event is not None:
                                    yield event
                            pause = follower.closed()
            except httpx.TransportError as exc:
                pause = follower.broken(exc)
            if pause is None:
                return
            time.sleep(pause)


class JobHandle:
    """A submitted job: read it, follow it, wait for it, cancel or retry it."""

    def __init__(self, client: Client, submitted: Submitted | str) -> None:
        self._client = client
        self.submitted = submitted if isinstance(submitted, Submitted) else None
        self.id = submitted.id if isinstance(submitted, Submitted) else submitted

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    @property
    def created(self) -> bool | None:
        """False when the submit's idempotency key named an earlier job; None for a
        handle made from an id."""
        return self.submitted.created if self.submitted is not None else None

    def get(self) -> Job:
        """The job now (from the ledger: it includes this client's own writes)."""
        return self._client.get(self.id)

    def events(self) -> list[HistoryEvent]:
        return self._client.events(self.id)

    def progress(
        self,
        *,
        after: int | None = None,
        on_reconnect: Callable[[Exception | None, float], None] | None = None,
    ) -> Generator[StreamEvent, None, None]:
        """The job's events as they happen, from the first (or after the ledger
        position ``after``) until it ends: ``ProgressEvent``, ``StatusEvent``,
        ``ErrorEvent`` and, last when it succeeds, ``ResultEvent``. A dropped
        connection is resumed where it broke off (``Last-Event-ID``): no event is
        yielded twice and none is skipped. ``on_reconnect(error, pause)`` is called
        before each pause (the error is None when the gateway ended the stream early
        or answered 502-504); after 20 failures in a row, ``Unreachable``. Leaving
        the loop early keeps the connection until the iterator is collected;
        ``contextlib.closing(...)`` closes it at once."""
        follower = _core.Follower(
            self._client._core, self.id, after=after, on_reconnect=on_reconnect
        )
        return self._client._follow(follower)

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job has finished (following its stream, not polling) and
        return it; ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds."""
        job = self.get()
        if job.finished:
            return job
        follower = _core.Follower(self._client._core, self.id, timeout=timeout)
        for _ in self._client._follow(follower):
            pass
        return self.get()

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the job, then its result; ``JobFailed`` (with the error and the
        last attempt's traceback) or ``JobCancelled`` if it did not succeed."""
        job = self.wait(timeout)
        return _core.outcome(job, self.events() if job.status == "failed" else [])

    def cancel(self) -> Job:
        """Cancel it: a queued job at once, a running one is asked to stop.
        ``Conflict`` if it has already finished."""
        return _core.job(self._client._send(self._client._core.cancel(self.id)))

    def retry(self) -> Job:
        """Run a failed or cancelled job again (a new attempt); ``Conflict`` otherwise."""
        return _core.job(self._client._send(self._client._core.retry(self.id)))
