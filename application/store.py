"""Calls into the ledger from an event loop, holding on through an
outage of PostgreSQL instead of giving up: a worker keeps its messages meanwhile,
since giving one back would count toward the queue's delivery limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from eventsourcing.persistence import InterfaceError, OperationalError

log = logging.getLogger("jobledger.worker")
T = TypeVar("T")

# What the event store raises while PostgreSQL cannot be reached (down, restarting,
# out of connections, a connection cut mid-query). A write that raised one of these
# may have committed all the same: whoever retries it reads the job back if refused.
UNREACHABLE = (OperationalError, InterfaceError)


class Store:
    def __init__(self, *, first_backoff_s: float = 0.1, max_backoff_s: float = 5.0) -> None:
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s

    async def call(self, command: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``command`` in a thread; while the store is unreachable, retry with backoff."""
        return await self.run(asyncio.to_thread, command, *args, **kwargs)

    async def run(self, command: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``command``; while the store is unreachable, retry with backoff."""
        backoff = self.first_backoff_s
        while True:
            try:
                return await command(*args, **kwargs)
            except UNREACHABLE as exc:
                log.warning("ledger unreachable, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
