"""The asyncio client: ``AsyncClient`` and the ``AsyncJobHandle`` it returns. It
mirrors ``client.sync`` call for call; both build their requests and read their
answers with ``client._core``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from client import _core
from client.errors import ApiError, Unreachable
from client.models import HistoryEvent, Job, JobSpec, Schedule, StreamEvent, Submitted


class AsyncClient:
    """A jobledger gateway, over HTTP, for asyncio: the same as ``Client`` with
    ``await`` (and ``async for`` over ``jobs()`` and ``progress()``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = _core.Core(base_url, token, timeout)
        self._owned = http is None
        self._http = http if http is not None else httpx.AsyncClient()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def submit(
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
    ) -> AsyncJobHandle:
        call = self._core.submit(
            job_type, case_id, params, idempotency_key, correlation_id, run_at, delay_s, priority
        )
        return AsyncJobHandle(self, _core.submitted(await self._send(call)))

    async def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> list[AsyncJobHandle]:
        handles: list[AsyncJobHandle] = []
        for offset, call in self._core.batches(jobs):
            try:
                response = await self._send(call)
            except ApiError as exc:
                raise _core.rebased(exc, offset) from None
            handles += [AsyncJobHandle(self, s) for s in _core.batch_submitted(response)]
        return handles

    def handle(self, job_id: str) -> AsyncJobHandle:
        return AsyncJobHandle(self, str(job_id))

    async def get(self, job_id: str, *, as_of: datetime | str | None = None) -> Job:
        return _core.job(await self._send(self._core.get(str(job_id), as_of)))

    async def events(
        self, job_id: str, *, until: datetime | str | None = None
    ) -> list[HistoryEvent]:
        return _core.history(await self._send(self._core.events(str(job_id), until)))

    async def jobs(
        self, case_id: str, *, status: str | None = None, page_size: int = 50
    ) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            items, cursor = _core.page(
                await self._send(self._core.jobs(case_id, status, cursor, page_size))
            )
            for item in items:
                yield item
            if cursor is None:
                return

    async def add_schedule(
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
        return _core.schedule(await self._send(call))

    async def schedules(self) -> list[Schedule]:
        """The tenant's schedules, by name."""
        return _core.schedules(await self._send(self._core.schedules()))

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule with its history (every change and tick fired)."""
        return _core.schedule(await self._send(self._core.get_schedule(str(schedule_id))))

    async def change_schedule(self, schedule_id: str, **fields: Any) -> Schedule:
        """Change only the fields given: cron, zone, type, case_id, params, catch_up."""
        call = self._core.change_schedule(str(schedule_id), **fields)
        return _core.schedule(await self._send(call))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self.change_schedule(schedule_id, paused=True)

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self.change_schedule(schedule_id, paused=False)

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._send(self._core.delete_schedule(str(schedule_id)))

    async def _send(self, call: _core.Call) -> httpx.Response:
        try:
            response = await self._http.request(**self._core.request(call))
        except httpx.TransportError as exc:
            raise Unreachable(f"{call.method} {call.path}: {exc}") from exc
        return self._core.checked(response)

    async def _follow(self, follower: _core.Follower) -> AsyncGenerator[StreamEvent, None]:
        while True:
            pause: float | None
            try:
                async with self._http.stream(**follower.request()) as response:
                    if response.status_code != 200:
                        await response.aread()
                    match follower.opened(response):
                        case "done":
                            return
                        case "again":
                            pause = follower.broken(None)
                        case "read":
                            async for line in response.aiter_lines():
                                event = follower.feed(line)
                                if event is not None:
                                    yield event
                            pause = follower.closed()
            except httpx.TransportError as exc:
                pause = follower.broken(exc)
            if pause is None:
                return
            await asyncio.sleep(pause)


class AsyncJobHandle:
    """A submitted job, for asyncio: the same as ``JobHandle`` with ``await``."""

    def __init__(self, client: AsyncClient, submitted: Submitted | str) -> None:
        self._client = client
        self.submitted = submitted if isinstance(submitted, Submitted) else None
        self.id = submitted.id if isinstance(submitted, Submitted) else submitted

    def __repr__(self) -> str:
        return f"AsyncJobHandle({self.id!r})"

    @property
    def created(self) -> bool | None:
        return self.submitted.created if self.submitted is not None else None

    async def get(self) -> Job:
        return await self._client.get(self.id)

    async def events(self) -> list[HistoryEvent]:
        return await self._client.events(self.id)

    def progress(
        self,
        *,
        after: int | None = None,
        on_reconnect: Callable[[Exception | None, float], None] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """As ``JobHandle.progress``; ``contextlib.aclosing(...)`` closes the
        connection at once when the loop is left early."""
        follower = _core.Follower(
            self._client._core, self.id, after=after, on_reconnect=on_reconnect
        )
        return self._client._follow(follower)

    async def wait(self, timeout: float | None = None) -> Job:
        job = await self.get()
        if job.finished:
            return job
        follower = _core.Follower(self._client._core, self.id, timeout=timeout)
        async for _ in self._client._follow(follower):
            pass
        return await self.get()

    async def result(self, timeout: float | None = None) -> dict[str, Any]:
        job = await self.wait(timeout)
        return _core.outcome(job, await self.events() if job.status == "failed" else [])

    async def cancel(self) -> Job:
        return _core.job(await self._client._send(self._client._core.cancel(self.id)))

    async def retry(self) -> Job:
        return _core.job(await self._client._send(self._client._core.retry(self.id)))
