"""``jobledger replay``: rebuild the job view from the first event into tables beside
the live ones (``job_view_rebuild``, its tracking position and its unprojectable
events), then compare it with the live view (``--verify``) or swap it in (``--swap``).

The rebuild is the live projector's own loop (``projections.runner.Projector``: the
same ``JobProjection`` fold, the same fallback to one event at a time and the same
record of what the view refuses), fed pages of the ledger read by position and decoded
while the previous page is written, and written in bulk (``BulkJobView``). Its
position is committed with each batch, so an interrupted rebuild resumes from it.

Both ``--verify`` and ``--swap`` bring the rebuild to the live view's own tracked
position, never beyond it, so the two are compared (or exchanged) at the same
position while the projector goes on:

- ``--verify`` opens a REPEATABLE READ snapshot of the live view and reads its position
  L in it, brings the rebuild to L, then reads both in job order side by side: the
  snapshot holds the live view at L however far the projector moves meanwhile.
- ``--swap`` locks the live view, its tracking and unprojectable tables in one
  transaction, brings the rebuild to the position L it reads under the lock (the
  projector, blocked, cannot move it), and renames: live → ``job_view_old_<time>``,
  rebuild → live, indexes alike. The rebuilt view takes over at exactly the position
  the live one had, so the projector's next transaction (blocked meanwhile, or not yet
  begun) applies the events after L to it, none twice and none skipped. PostgreSQL
  looks a name up again once a lock on it is granted and when a prepared statement's
  table changes, so the gateway's and the projector's statements read and write the
  new table from the commit on; their connections stay open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from domain.ledger import JobLedger
from infra.events_table import EventsTable, Positioned
from infra.settings import PostgresSettings
from projections.bulk_view import BulkJobView
from projections.job_view import COLUMNS, PostgresJobView
from projections.runner import Projector

LIVE_TABLE = "job_view"
DEFAULT_BATCH = 20_000
SHOWN = 20  # differing jobs listed
# How long --verify and --swap wait for a live view that is behind the rebuild.
LIVE_CATCH_UP_S = 60.0
# Events the rebuild may still lack when the swap takes its lock: caught up under it.
SWAP_GAP = 2_000
# A lock request waiting in the queue holds up the gateway's reads behind it: it waits
# at most this long (behind a long read, say), and is made again a few times.
SWAP_LOCK_TIMEOUT = "1s"
SWAP_LOCK_ATTEMPTS = 10


class ReplayError(Exception):
    """The replay cannot go on: the message says why and what to do."""


class Progress:
    """Events done / total, events/s and ETA on one line of a terminal; on anything
    else (or quiet), nothing until ``finish``."""

    def __init__(self, total: int, out: TextIO, *, quiet: bool = False) -> None:
        self.total = total
        self.done = 0
        self.out = out
        self.live = not quiet and out.isatty()
        self.began = time.perf_counter()
        self.drawn = 0.0

    def advance(self, events: int) -> None:
        self.done += events
        now = time.perf_counter()
        if self.live and (now - self.drawn >= 0.2 or self.done >= self.total):
            self.drawn = now
            self.out.write("\r" + self.line(now))
            self.out.flush()

    def rate(self, now: float | None = None) -> float:
        elapsed = (now or time.perf_counter()) - self.began
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float) -> str:
        rate = self.rate(now)
        share = self.done / self.total if self.total else 1.0
        filled = int(share * 24)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"replay [{'#' * filled}{'-' * (24 - filled)}] {share:4.0%} "
            f"{self.done:,}/{self.total:,} events  {rate:,.0f} events/s  "
            f"ETA {int(left // 60)}:{int(left % 60):02d} "
        )

    def finish(self) -> None:
        if self.live:
            self.out.write("\n")
            self.out.flush()


class LedgerPages:
    """The ledger after a position and up to another, in pages of ``batch`` events
    read by position on a connection of its own (binary), each page read and decoded
    in a thread while the one before is applied."""

    def __init__(
        self,
        events: EventsTable,
        conninfo: str,
        *,
        until: int,
        batch: int,
        progress: Progress,
        stop_after: int | None = None,
    ) -> None:
        self.events = events
        self.conninfo = conninfo
        self.until = until
        self.batch = batch
        self.progress = progress
        self.stop_after = stop_after
        self.stopped = False

    async def batches(self, after: int | None) -> AsyncGenerator[Sequence[Positioned], None]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cursor = conn.cursor(binary=True)

            def page(position: int) -> list[Positioned]:
                cursor.execute(
                    self.events.after_until, (position, self.until, self.batch), prepare=True
                )
                return self.events.decoded(cursor.fetchall())

            position = after or 0
            reading: asyncio.Future[list[Positioned]] | None = None
            if position < self.until:
                reading = asyncio.ensure_future(asyncio.to_thread(page, position))
            try:
                while reading is not None:
                    found = await reading
                    reading = None
                    if not found:
                        return
                    position = found[-1][1]
                    if position < self.until:
                        reading = asyncio.ensure_future(asyncio.to_thread(page, position))
                    yield found
                    # Back here: the page is applied.
                    self.progress.advance(len(found))
                    if self.stop_after is not None and self.progress.done >= self.stop_after:
                        self.stopped = True
                        return
            finally:
                if reading is not None:
                    # Let the read in flight end before its connection closes.
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(reading)


@dataclass
class Differences:
    position: int
    jobs: int = 0
    differing: dict[UUID, list[str]] = field(default_factory=dict)
    unprojectable: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.differing) + len(self.unprojectable)

    def print(self, out: TextIO) -> None:
        print(
            f"verify: {self.jobs:,} jobs compared at ledger position {self.position:,}: "
            f"{len(self.differing):,} differ",
            file=out,
        )
        for job_id, fields in list(self.differing.items())[:SHOWN]:
            print(f"  job {job_id}: {', '.join(fields)}", file=out)
        if len(self.differing) > SHOWN:
            print(f"  … and {len(self.differing) - SHOWN:,} more", file=out)
        for line in self.unprojectable[:SHOWN]:
            print(f"  {line}", file=out)
        print(
            "verify: " + ("FAILED" if self.count else "the live view equals the replay"), file=out
        )


class Replay:
    def __init__(
        self,
        pg: PostgresSettings,
        ledger: JobLedger,
        live: PostgresJobView,
        rebuild: BulkJobView,
        *,
        batch: int = DEFAULT_BATCH,
        err: TextIO = sys.stderr,
        quiet: bool = False,
        stop_after: int | None = None,
    ) -> None:
        self.pg = pg
        self.ledger = ledger
        self.live = live
        self.rebuild = rebuild
        self.batch = batch
        self.err = err
        self.quiet = quiet
        self.stop_after = stop_after
        self.events = EventsTable(ledger)
        self.name = ledger.name
        self.applied = 0  # events rebuilt by this run
        self.locked_s = 0.0  # how long the swap held the live view locked
        self.stopped = False

    # Positions

    def rebuilt_position(self) -> int:
        return self.rebuild.max_tracking_id(self.name) or 0

    def live_position(self) -> int:
        return self.live.max_tracking_id(self.name) or 0

    def _events_between(self, after: int, until: int) -> int:
        with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {} WHERE notification_id > %s AND notification_id <= %s"
                ).format(self.events_table),
                (after, until),
            ).fetchone()
        return int(row[0]) if row else 0

    @property
    def events_table(self) -> sql.Identifier:
        recorder: Any = self.ledger.recorder
        return sql.Identifier(recorder.datastore.schema, recorder.events_table_name)

    # The rebuild

    def build(self, until: int, *, progress: bool = True) -> int:
        """Bring the rebuild to ``until`` (from its own position); its position after."""
        after = self.rebuilt_position()
        if after >= until:
            return after
        total = self._events_between(after, until)
        bar = Progress(total, self.err, quiet=self.quiet or not progress)
        source = LedgerPages(
            self.events,
            self.pg.conninfo,
            until=until,
            batch=self.batch,
            progress=bar,
            stop_after=None if self.stop_after is None else self.stop_after - self.applied,
        )
        projector = Projector(source=source, view=self.rebuild, application_name=self.name)
        # The events, changes and rows of a page are many small containers that live
        # until the page is written, none in a cycle: the cyclic collector, run every
        # few hundred allocations, only re-scans them (it took 40% of the CPU of the
        # decoding and folding). Off for the rebuild, one collection after it.
        collecting = gc.isenabled()
        gc.disable()
        try:
            asyncio.run(projector.run())
        finally:
            if collecting:
                gc.enable()
            gc.collect()
            bar.finish()
            self.applied += bar.done
        self.stopped = source.stopped
        return self.rebuilt_position()

    def build_to_live(self) -> int:
        """Bring the rebuild to the live view's position (waiting, bounded, for a
        live view that is behind it)."""
        rebuilt, live = self.rebuilt_position(), self.live_position()
        deadline = time.monotonic() + LIVE_CATCH_UP_S
        while live < rebuilt:
            if time.monotonic() > deadline:
                raise ReplayError(
                    f"the live view (position {live:,}) is behind the rebuild (position "
                    f"{rebuilt:,}): start the projector, or rebuild again with --restart"
                )
            time.sleep(0.2)
            live = self.live_position()
        return self.build(live)

    # --verify

    def verify(self) -> Differences:
        """Compare the rebuild with the live view at one position: a snapshot of the
        live view and its position, the rebuild brought to that position."""
        self.build_to_live()
        with (
            psycopg.connect(self.pg.conninfo) as snap,
            psycopg.connect(self.pg.conninfo) as mine,
        ):
            snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap.read_only = True
            row = snap.execute(
                sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                    sql.Identifier(self.pg.schema_, self.live.tracking_table_name)
                ),
                (self.name,),
            ).fetchone()
            position = int(row[0]) if row and row[0] is not None else 0
            rebuilt = self.build(position, progress=False)
            if rebuilt != position:
                raise ReplayError(
                    f"the rebuild is at position {rebuilt:,}, the live view at {position:,}"
                )
            found = Differences(position)
            live_rows = _rows(snap, self.live.table, "live")
            rebuilt_rows = _rows(mine, self.rebuild.table, "rebuilt")
            for job_id, live_row, rebuilt_row in _joined(live_rows, rebuilt_rows):
                found.jobs += 1
                if live_row is None:
                    found.differing[job_id] = ["missing from the live view"]
                elif rebuilt_row is None:
                    found.differing[job_id] = ["not in the ledger's replay"]
                else:
                    fields = [c for c in COLUMNS if live_row[c] != rebuilt_row[c]]
                    if fields:
                        found.differing[job_id] = fields
            live_skipped = _skipped(snap, self.live.skipped)
            rebuilt_skipped = _skipped(mine, self.rebuild.skipped)
            for at in sorted(live_skipped.keys() - rebuilt_skipped.keys()):
                found.unprojectable.append(
                    f"position {at:,} (job {live_skipped[at]}): set aside by the live view only"
                )
            for at in sorted(rebuilt_skipped.keys() - live_skipped.keys()):
                found.unprojectable.append(
                    f"position {at:,} (job {rebuilt_skipped[at]}): set aside by the rebuild only"
                )
        return found

    # --swap

    def swap(self) -> tuple[str, int]:
        """Swap the rebuild in for the live view: the former view's new name, and the
        ledger position at which the rebuild took over."""
        # Close the gap outside the lock, so little is left to do under it.
        for _ in range(10):
            self.build_to_live()
            if self.live_position() - self.rebuilt_position() <= SWAP_GAP:
                break
        self.rebuild.create_indexes()
        self._check_columns()
        old = f"job_view_old_{datetime.now(UTC):%Y%m%d%H%M%S}"
        for attempt in range(1, SWAP_LOCK_ATTEMPTS + 1):
            try:
                return old, self._swap(old)
            except psycopg.errors.LockNotAvailable:
                if attempt == SWAP_LOCK_ATTEMPTS:
                    raise ReplayError(
                        f"the live view stayed locked by others for {SWAP_LOCK_ATTEMPTS} times "
                        f"{SWAP_LOCK_TIMEOUT}: nothing was swapped; run again"
                    ) from None
        raise AssertionError  # pragma: no cover

    def _swap(self, old: str) -> int:
        schema = self.pg.schema_
        live = LIVE_TABLE
        rebuild = self.rebuild.view_table_name
        tables = ("", "_unprojectable", "_tracking")
        with psycopg.connect(self.pg.conninfo) as conn:
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT))
            )
            # The projector's order (the view, then its position): no deadlock with it.
            conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(schema, live + t) for t in tables)
                )
            )
            locked = time.perf_counter()
            row = conn.execute(
                sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                    sql.Identifier(schema, live + "_tracking")
                ),
                (self.name,),
            ).fetchone()
            position = int(row[0]) if row and row[0] is not None else 0
            # The live view cannot move now: the rebuild takes its exact position.
            rebuilt = self.build(position, progress=False)
            if rebuilt != position:
                raise ReplayError(
                    f"the rebuild is at position {rebuilt:,}, the live view at {position:,}: "
                    "nothing was swapped"
                )
            conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(schema, rebuild + t) for t in tables)
                )
            )
            for suffix in tables:
                _rename(conn, schema, live + suffix, old + suffix, live, old)
            for suffix in tables:
                _rename(conn, schema, rebuild + suffix, live + suffix, rebuild, live)
        self.locked_s = time.perf_counter() - locked
        return position

    def _check_columns(self) -> None:
        """The rebuilt table must answer the statements prepared on the live one alike
        (``SELECT *`` included): the same columns, in the same order, of the same types."""
        with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
            shapes = [
                conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                    "ORDER BY attnum",
                    (sql.Identifier(self.pg.schema_, name).as_string(conn),),
                ).fetchall()
                for name in (LIVE_TABLE, self.rebuild.view_table_name)
            ]
        if shapes[0] != shapes[1]:
            raise ReplayError(
                "the rebuilt table's columns differ from the live view's: nothing was swapped"
            )


def _rename(
    conn: psycopg.Connection[Any], schema: str, table: str, to: str, prefix: str, new_prefix: str
) -> None:
    """Rename a table and its indexes (whose names start with ``prefix``): index names
    are the schema's, and the next rebuild creates its own under its own names."""
    indexes = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, table), sql.Identifier(to)
        )
    )
    for (index,) in indexes:
        if index.startswith(prefix):
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(schema, index),
                    sql.Identifier(new_prefix + index[len(prefix) :]),
                )
            )


def _rows(
    conn: psycopg.Connection[Any], table: sql.Identifier, name: str
) -> Iterator[dict[str, Any]]:
    with conn.cursor(name=f"replay_{name}", row_factory=dict_row) as cursor:
        cursor.itersize = 5000
        cursor.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY job_id").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), table
            )
        )
        yield from cursor


def _joined(
    left: Iterator[dict[str, Any]], right: Iterator[dict[str, Any]]
) -> Iterator[tuple[UUID, dict[str, Any] | None, dict[str, Any] | None]]:
    """Two streams of rows in job order, side by side."""
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a["job_id"] < b["job_id"]):
            assert a is not None
            yield a["job_id"], a, None
            a = next(left, None)
        elif a is None or b["job_id"] < a["job_id"]:
            yield b["job_id"], None, b
            b = next(right, None)
        else:
            yield a["job_id"], a, b
            a, b = next(left, None), next(right, None)


def _skipped(conn: psycopg.Connection[Any], table: sql.Identifier) -> dict[int, UUID]:
    return {
        position: job_id
        for position, job_id in conn.execute(
            sql.SQL("SELECT position, job_id FROM {}").format(table)
        ).fetchall()
    }


@contextlib.contextmanager
def only_replay(pg: PostgresSettings) -> Iterator[None]:
    """One replay at a time per schema: a second one is refused, not interleaved."""
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        key = f"jobledger.replay:{pg.schema_}"
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
        if not row or not row[0]:
            raise ReplayError("another jobledger replay is running on this schema")
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def quiet_projector_logs() -> None:
    """The runner's start line is the live projector's; the replay says its own."""
    logging.getLogger("jobledger.projector").setLevel(logging.WARNING)
