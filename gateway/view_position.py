"""Waiting for the job view to reach a ledger position, without a thread per waiter.

A listing request that sends ``X-Ledger-Position`` waits (bounded) until the view has
applied that position. One task per gateway process polls the view's position while
anyone waits, and wakes every waiter it has passed; a waiter holds no thread, so a
client sending positions that are far off cannot starve other tenants' requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

POLL_S = 0.01


class ViewPosition:
    def __init__(self, read: Callable[[], int | None], poll_s: float = POLL_S) -> None:
        self.read = read  # the view's position (blocking: run in a thread)
        self.poll_s = poll_s
        self.position = 0
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def reached(self, position: int, timeout_s: float) -> bool:
        """Whether the view reached ``position`` within ``timeout_s``."""
        if position <= self.position:
            return True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(position, []).append(done)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(timeout_s):
                await done
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(position, [])
            with contextlib.suppress(ValueError):
                waiting.remove(done)
            if not waiting:
                self._waiters.pop(position, None)
        return True

    async def _poll(self) -> None:
        while self._waiters:
            read: int | None = await asyncio.to_thread(self.read)
            self.position = max(self.position, read or 0)
            for position in [p for p in self._waiters if p <= self.position]:
                for done in self._waiters.pop(position):
                    if not done.done():
                        done.set_result(None)
            if self._waiters:
                await asyncio.sleep(self.poll_s)
