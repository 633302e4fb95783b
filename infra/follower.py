"""Follows the ledger: yields batches of (event, position) after a position, in
order, waking on PostgreSQL NOTIFY and catching up by query. A database outage
pauses the stream; it resumes where it stopped.

One connection does both the LISTEN and the reads: a read is one prepared
statement in autocommit, with no pool checkout, no transaction and no thread
hop. The ledger's writers number events in commit order (each insert holds the
table's lock), so reading past a position never skips a later commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import sql

from domain.ledger import JobLedger
from infra.events_table import EventsTable

log = logging.getLogger("jobledger.follower")

Batch = Sequence[tuple[Any, int]]
# A batch larger than this is decoded in a thread, so the loop keeps serving.
DECODE_INLINE_MAX = 50


class LedgerFollower:
    def __init__(
        self,
        ledger: JobLedger,
        conninfo: str,
        *,
        batch_size: int = 500,
        idle_poll_s: float = 10.0,
        max_backoff_s: float = 5.0,
        min_interval_s: float = 0.0,
        decode_if: Callable[[], bool] | None = None,
        needed_again: asyncio.Event | None = None,
        topics: Collection[str] | None = None,
        skip_interval_s: float = 0.5,
        woken_by: Collection[str] | None = None,
    ) -> None:
        """``min_interval_s`` spaces reads out when the ledger is busy, so one read
        takes many commits' events. ``topics`` names the only events that are needed:
        the others are yielded as None, with their positions. ``decode_if``, asked
        before each read, may say no events are needed at all: the follower then
        only moves to the ledger's head, yielding ``[(None, head)]`` at most every
        ``skip_interval_s`` (and only if something was committed), and reads again
        when it says yes: at once if ``needed_again`` is set then, else within
        ``skip_interval_s``. ``woken_by`` names the events whose commits must wake
        the follower (None: every commit); the others' events are read at the next
        wake-up, in order, or at the poll."""
        self.ledger = ledger
        self.conninfo = conninfo
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.max_backoff_s = max_backoff_s
        self.min_interval_s = min_interval_s
        self.decode_if = decode_if
        self.needed_again = needed_again
        self.topics = frozenset(topics) if topics is not None else None
        self.skip_interval_s = skip_interval_s
        recorder: Any = ledger.recorder
        self.channel: str = recorder.channel_for(woken_by)
        self.table = EventsTable(ledger)
        self.notifications = 0  # NOTIFYs received, over every connection

    async def batches(self, after: int | None) -> AsyncGenerator[Batch, None]:
        """Every event after ``after``, forever; never skips (unless ``decode_if`` says
        none is needed), never repeats."""
        position = after or 0
        backoff = 0.1
        while True:
            try:
                async with contextlib.aclosing(self._follow(position)) as follow:
                    async for batch in follow:
                        position = batch[-1][1]
                        backoff = 0.1
                        yield batch
            except (psycopg.OperationalError, PersistenceError) as exc:
                log.warning("ledger unreachable, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _follow(self, position: int) -> AsyncGenerator[Batch, None]:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        listening = False
        # Closed in ``finally``, not by ``async with``: its exit awaits a rollback first,
        # and a cancel landing there (a stopping process, a closed stream) would skip
        # the close and leave the connection to the garbage collector.
        try:
            committed = True  # since the head was last read: not known yet
            moved = False  # the last read of the head found it moved
            while True:
                if self.decode_if is not None and not self.decode_if():
                    if committed:
                        cursor = await conn.execute(
                            self.table.head_after, (position,), prepare=True
                        )
                        head = (await cursor.fetchone() or (None,))[0]
                        if self.decode_if():
                            # A stream opened while the head was read: the events up to
                            # it may be its own, so they are read, not passed over.
                            continue
                        moved = head is not None
                        if head is not None:
                            position = head
                            yield [(None, head)]
                    committed, listening = await self._skipping(conn, listening, moved)
                    continue
                if not listening:
                    # Before the read: a commit after it wakes the wait below.
                    await self._listen(conn, True)
                    listening = True
                read_at = time.monotonic()
                cursor = await conn.execute(
                    self.table.after, (position, self.batch_size), prepare=True
                )
                rows = await cursor.fetchall()
                if rows:
                    batch = await self._decoded(rows)
                    position = batch[-1][1]
                    yield batch
                    if len(rows) == self.batch_size:
                        continue
                # Wait for a NOTIFY (an append sends it in its own transaction: the
                # recorder's insert function), or poll now and then all the same.
                await self._notified(conn, self.idle_poll_s)
                wait_s = read_at + self.min_interval_s - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
        finally:
            await conn.close()  # no await inside for a connection of its own: never cut short

    async def _listen(self, conn: psycopg.AsyncConnection[Any], on: bool) -> None:
        verb = "LISTEN {}" if on else "UNLISTEN {}"
        await conn.execute(sql.SQL(verb).format(sql.Identifier(self.channel)))

    async def _skipping(
        self, conn: psycopg.AsyncConnection[Any], listening: bool, moved: bool
    ) -> tuple[bool, bool]:
        """While no events are needed: wait until something may have been committed,
        then say so (and whether the connection now listens). Without ``needed_again``,
        every ``skip_interval_s``. With it: while the head keeps moving, the head is
        read every ``skip_interval_s`` (or at once when a stream opens), and the
        connection does not listen: PostgreSQL would otherwise signal its backend at
        every commit, and send a NOTIFY that nobody reads. Once a read finds the head
        still, it listens again and sleeps until a commit or a stream; the head is read
        once more after the LISTEN, so a commit just before it is not missed."""
        assert self.decode_if is not None
        if self.needed_again is None:
            await asyncio.sleep(self.skip_interval_s)
            if not listening:
                await self._listen(conn, True)
            return await self._drained(conn) or not listening, True
        needed = self.needed_again
        needed.clear()
        if self.decode_if():
            return True, listening
        if moved:
            if listening:
                await self._listen(conn, False)
                await self._drained(conn)  # those sent before the UNLISTEN
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.skip_interval_s):
                    await needed.wait()
            return True, False
        if not listening:
            await self._listen(conn, True)
            return True, True
        if not await self._drained(conn):
            await self._notified(conn, None, wake=needed)  # a commit, or a stream opened
        return True, True

    async def _notified(
        self,
        conn: psycopg.AsyncConnection[Any],
        timeout_s: float | None,
        wake: asyncio.Event | None = None,
    ) -> bool:
        """Wait up to ``timeout_s`` (None: no limit) for a NOTIFY, or for ``wake`` to be
        set; True if a NOTIFY came. The loop watches the socket itself: psycopg's own
        wait wakes every 100 ms to look for a cancel, ten wake-ups a second for each
        idle follower."""
        if await self._drained(conn):  # received during a read, or before the wait began
            return True
        loop = asyncio.get_running_loop()
        readable = wake if wake is not None else asyncio.Event()
        fd = conn.fileno()
        loop.add_reader(fd, readable.set)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await readable.wait()
        finally:
            loop.remove_reader(fd)
        return await self._drained(conn)

    async def _drained(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Take the NOTIFYs that arrived; True if there were any."""
        received = 0
        async for _ in conn.notifies(timeout=0):
            received += 1
        self.notifications += received
        return received > 0

    async def _decoded(self, rows: list[tuple[Any, ...]]) -> Batch:
        wanted = self.topics
        decoding = len(rows) if wanted is None else sum(row[3] in wanted for row in rows)
        if decoding > DECODE_INLINE_MAX:
            return await asyncio.to_thread(self._decode, rows)
        return self._decode(rows)

    def _decode(self, rows: list[tuple[Any, ...]]) -> Batch:
        return self.table.decoded(rows, self.topics)
