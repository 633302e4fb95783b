"""Coalesces a handler's progress reports into at most one ledger write per
interval. The newest value wins; the last one is written before the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class ProgressReporter:
    def __init__(self, write: Callable[[int, str], Awaitable[bool]], *, interval_s: float) -> None:
        """``write`` records a value and says whether the ledger asks the job to stop;
        ``on_cancel`` is then called."""
        self.write = write
        self.interval_s = interval_s
        self.on_cancel: Callable[[], Any] | None = None
        self.writes = 0
        self._latest: tuple[int, str] | None = None
        self._written: tuple[int, str] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        # Started by the first report: most jobs never report, and a task, two events
        # and a timeout for each were a few per cent of a worker's CPU.
        self._task: asyncio.Task[None] | None = None

    def report(self, percent: int, message: str) -> None:
        self._latest = (percent, message)
        self._wake.set()
        if self._task is None and not self._closing.is_set():
            self._task = asyncio.create_task(self._loop())

    def report_threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[int, str], None]:
        """A ``report`` that handlers may call from their own threads."""
        loop_thread = threading.get_ident()

        def report(percent: int, message: str) -> None:
            if threading.get_ident() == loop_thread:
                self.report(percent, message)
            else:
                loop.call_soon_threadsafe(self.report, percent, message)

        return report

    async def close(self) -> None:
        """Stop the loop and write the final value, if it is not written yet."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._flush()

    async def _loop(self) -> None:
        while not self._closing.is_set():
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._closing.wait()

    async def _flush(self) -> None:
        value = self._latest
        if value is None or value == self._written:
            return
        stop = await self.write(*value)
        self._written = value
        self.writes += 1
        if stop and self.on_cancel:
            self.on_cancel()
