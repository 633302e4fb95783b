"""Follows the ledger: yields batches of (event, position) after a position, in
order, waking on PostgreSQL NOTIFY and catching up by query. A database outage
pauses the stream; it resumes where it stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import sql

from domain.ledger import JobLedger

log = logging.getLogger("jobledger.follower")

Batch = Sequence[tuple[Any, int]]


class LedgerFollower:
    def __init__(
        self,
        ledger: JobLedger,
        conninfo: str,
        *,
        batch_size: int = 500,
        idle_poll_s: float = 1.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.ledger = ledger
        self.conninfo = conninfo
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.max_backoff_s = max_backoff_s
        recorder: Any = ledger.recorder
        self.channel: str = recorder.channel_name

    async def batches(self, after: int | None) -> AsyncIterator[Batch]:
        """Every event after ``after``, forever; never skips, never repeats."""
        position = after or 0
        backoff = 0.1
        while True:
            try:
                async for batch in self._follow(position):
                    position = batch[-1][1]
                    backoff = 0.1
                    yield batch
            except (psycopg.OperationalError, PersistenceError) as exc:
                log.warning("ledger unreachable, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _follow(self, position: int) -> AsyncIterator[Batch]:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            while True:
                batch = await asyncio.to_thread(self._select, position)
                if batch:
                    position = batch[-1][1]
                    yield batch
                    if len(batch) == self.batch_size:
                        continue
                # Wait for a NOTIFY, or poll now and then in case one was missed.
                async for _ in conn.notifies(timeout=self.idle_poll_s, stop_after=1):
                    pass

    def _select(self, position: int) -> Batch:
        notifications = self.ledger.recorder.select_notifications(
            start=position, limit=self.batch_size, inclusive_of_start=False
        )
        mapper = self.ledger.mapper
        return [(mapper.to_domain_event(n), n.id) for n in notifications]
