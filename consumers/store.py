"""Calls into the ledger (synchronous) from the worker's loop, holding on through
an outage of PostgreSQL instead of giving the message back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from eventsourcing.persistence import InterfaceError, OperationalError

from domain.errors import InvalidTransition
from domain.ledger import Committed

log = logging.getLogger("jobledger.worker")
T = TypeVar("T")

UNREACHABLE = (OperationalError, InterfaceError)


class Store:
    def __init__(self, max_backoff_s: float = 5.0) -> None:
        self.max_backoff_s = max_backoff_s

    async def call(self, command: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``command`` in a thread; while the store is unreachable, retry with backoff."""
        backoff = 0.1
        while True:
            try:
                return await asyncio.to_thread(command, *args, **kwargs)
            except UNREACHABLE as exc:
                log.warning("ledger unreachable, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def record(
        self, command: Callable[..., Committed], *args: Any, **kwargs: Any
    ) -> Committed | None:
        """Like ``call``; a command the state machine refuses is logged and gives None."""
        try:
            return await self.call(command, *args, **kwargs)
        except InvalidTransition as exc:
            log.warning("not recorded: %s", exc)
            return None
