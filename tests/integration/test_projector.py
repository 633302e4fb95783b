"""The projector against the real PostgreSQL ledger: exactly once, restartable,
rebuildable from position zero."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from application.outbox import DISPATCHED_TOPICS, FOLLOWED_TOPICS
from domain.job import Job
from domain.ledger import JobLedger
from infra import ledger_store
from infra.follower import LedgerFollower
from infra.ledger_processes import dispatcher_source, projector_source
from infra.settings import LedgerSettings, PostgresSettings, Settings
from projections.job_view import PostgresJobView
from projections.projection import JobProjection, ViewChange
from projections.runner import Projector
from tests.integration.conftest import LEDGER_ORIGIN, _pg_conninfo, submit_to_ledger


def _write_history(ledger: JobLedger, jobs: int) -> list[uuid.UUID]:
    ids = []
    for n in range(jobs):
        job_id = submit_to_ledger(ledger, n)
        ledger.start_job(job_id, 1, "w1", LEDGER_ORIGIN)
        ledger.report_progress(job_id, 40, "working", LEDGER_ORIGIN)
        if n % 4 == 0:
            ledger.fail_attempt(
                job_id, "boom", retryable=False, retry_delay_s=None, origin=LEDGER_ORIGIN
            )
        else:
            ledger.complete_job(job_id, {"n": n}, LEDGER_ORIGIN)
        ids.append(job_id)
    return ids


class _FirstBatches:
    """The source's first ``n`` batches, then nothing more, ever."""

    def __init__(self, source: Any, n: int) -> None:
        self.source, self.n = source, n

    async def batches(self, after: int | None) -> AsyncGenerator[Sequence[tuple[Any, int]], None]:
        async with contextlib.aclosing(self.source.batches(after)) as batches:
            taken = 0
            async for batch in batches:
                yield batch
                taken += 1
                if taken == self.n:
                    break
        await asyncio.Event().wait()


async def _project_until(projector: Projector, position: int, stop_after_batches: int = 0) -> None:
    """Run the projector until the view reaches ``position`` (or a number of batches)."""
    task = asyncio.create_task(projector.run())
    batches = 0
    try:
        while projector.position < position:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
            batches += 1
            if stop_after_batches and projector.position > 0:
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _assert_view_matches_ledger(
    view: PostgresJobView, ledger: JobLedger, ids: list[uuid.UUID]
) -> None:
    for job_id in ids:
        job, row = ledger.get_job(job_id), view.get(job_id)
        assert row is not None
        assert (row.status, row.progress, row.attempt, row.error, row.result) == (
            job.status.value,
            job.progress,
            job.attempt,
            job.error,
            job.result,
        )


async def test_a_restarted_projector_resumes_without_loss_or_double_counting(
    pg: PostgresSettings,
) -> None:
    ledger = ledger_store.open_ledger(pg)
    view = ledger_store.open_view(pg)
    ids = _write_history(ledger, 12)
    last = ledger.recorder.max_notification_id()
    assert last is not None

    def projector(batches: int = 0) -> Projector:
        follower = LedgerFollower(ledger, pg.conninfo, batch_size=7)
        source = _FirstBatches(follower, batches) if batches else follower
        return Projector(source=source, view=view, application_name=ledger.name)

    first = projector(batches=1)  # stops after its first batch, however fast it runs
    await _project_until(first, last, stop_after_batches=1)
    assert 0 < (view.max_tracking_id(ledger.name) or 0) < last, "stopped part way"

    await _project_until(projector(), last)
    assert view.max_tracking_id(ledger.name) == last
    _assert_view_matches_ledger(view, ledger, ids)


async def test_the_view_is_rebuilt_from_position_zero(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg)
    ids = _write_history(ledger, 8)
    last = ledger.recorder.max_notification_id()
    assert last is not None
    datastore = ledger_store.open_view(pg).datastore
    rebuilt = PostgresJobView(
        datastore, view_table_name="job_view_rebuilt", tracking_table_name="rebuilt_tracking"
    )
    rebuilt.create_table()

    follower = LedgerFollower(ledger, pg.conninfo)
    await _project_until(
        Projector(source=follower, view=rebuilt, application_name=ledger.name), last
    )

    _assert_view_matches_ledger(rebuilt, ledger, ids)
    page = rebuilt.list_case("t1", "case-0", limit=100)
    assert {r.job_id for r in page.rows} == {ids[n] for n in range(8) if n % 3 == 0}


async def test_the_same_position_is_never_applied_twice(pg: PostgresSettings) -> None:
    view = ledger_store.open_view(pg)
    ledger = ledger_store.open_ledger(pg)
    job_id = submit_to_ledger(ledger, 0)
    event = ledger.job_history(job_id)[0]
    changes = list(JobProjection().changes(event, 1))
    view.apply(changes, Tracking(ledger.name, 1))
    with pytest.raises(IntegrityError):
        view.apply([ViewChange(job_id, {"progress": 99})], Tracking(ledger.name, 1))
    row = view.get(job_id)
    assert row is not None and row.progress == 0


async def test_a_follower_decodes_only_the_topics_it_is_given(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg)
    ids = _write_history(ledger, 3)
    last = ledger.recorder.max_notification_id()
    assert last is not None
    follower = LedgerFollower(ledger, pg.conninfo, batch_size=4, topics=DISPATCHED_TOPICS)

    seen: list[tuple[object, int]] = []
    # Closed here, not whenever the collector finds it: its LISTEN connection with it.
    async with contextlib.aclosing(follower.batches(None)) as batches:
        async for batch in batches:
            seen.extend(batch)
            if seen[-1][1] == last:
                break

    assert [position for _, position in seen] == list(range(1, last + 1)), "every position"
    decoded = [event for event, _ in seen if event is not None]
    # Job 0 fails for good (its AttemptFailed may call for a retry); the others
    # start, report and succeed: none of that is the dispatcher's business.
    assert [(type(e), e.originator_id) for e in decoded] == [
        (Job.Submitted, ids[0]),
        (Job.AttemptFailed, ids[0]),
        (Job.Submitted, ids[1]),
        (Job.Submitted, ids[2]),
    ]


async def test_a_follower_woken_by_dispatched_events_reads_the_others_with_them(
    pg: PostgresSettings,
) -> None:
    """The dispatcher's follower: a commit of a job's start or end does not wake it
    (two of a job's three commits); the next commit calling for a message does, and
    it reads, in order, everything committed before that one too."""
    ledger = ledger_store.open_ledger(pg)
    job_id = submit_to_ledger(ledger, 0)
    follower = LedgerFollower(
        ledger, pg.conninfo, topics=FOLLOWED_TOPICS, woken_by=DISPATCHED_TOPICS, idle_poll_s=60
    )
    batches = follower.batches(None)
    try:
        first = await asyncio.wait_for(anext(batches), 5)
        assert [(type(e), e.originator_id) for e, _ in first] == [(Job.Submitted, job_id)]
        ledger.start_job(job_id, 1, "w1", LEDGER_ORIGIN)
        ledger.complete_job(job_id, {}, LEDGER_ORIGIN)
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "woken by a commit that calls for no message"
        second = submit_to_ledger(ledger, 1)
        batch = await asyncio.wait_for(waiting, 5)
        while batch[-1][0] is None or batch[-1][0].originator_id != second:
            batch = [*batch, *await asyncio.wait_for(anext(batches), 5)]
    finally:
        await batches.aclose()
    assert [(type(e), e.originator_id) for e, _ in batch if e is not None] == [
        (Job.Started, job_id),
        (Job.Submitted, second),
    ]
    assert len(batch) == 3, "the start, the success (not decoded) and the next submit"


@pytest.mark.parametrize("source", [dispatcher_source, projector_source])
async def test_a_follower_under_a_steady_rate_reads_once_an_interval(
    pg: PostgresSettings, source: Callable[[Settings, JobLedger], LedgerFollower]
) -> None:
    """The dispatcher's and the projector's followers, with their read interval set:
    jobs submitted 10 ms apart are read a few commits at a time, one read (and one
    wake-up of the process) an interval, not one a commit; and a commit after a quiet
    spell longer than the interval is read at once, not an interval later."""
    interval_s = 1.0
    settings = Settings(
        postgres=pg,
        ledger=LedgerSettings(
            dispatcher_read_interval_s=interval_s, projector_read_interval_s=interval_s
        ),
    )
    ledger = ledger_store.open_ledger(pg)
    follower = source(settings, ledger)
    follower.idle_poll_s = 60
    reads: list[tuple[float, set[uuid.UUID]]] = []

    async def consume() -> None:
        async with contextlib.aclosing(
            follower.batches(ledger.recorder.max_notification_id())
        ) as batches:
            async for batch in batches:
                reads.append((time.monotonic(), {e.originator_id for e, _ in batch if e}))

    async def read_at(job_id: uuid.UUID) -> float:
        for _ in range(1000):
            if at := next((t for t, ids in reads if job_id in ids), None):
                return at
            await asyncio.sleep(0.01)
        raise AssertionError(f"{job_id} was never read")

    consuming = asyncio.create_task(consume())
    try:
        await asyncio.sleep(0.3)  # listening
        began = time.monotonic()
        for n in range(60):
            last = await asyncio.to_thread(submit_to_ledger, ledger, n)
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - began
        await read_at(last)
        steady = len(reads)
        assert steady <= elapsed / interval_s + 2, (
            f"{steady} reads of 60 commits in {elapsed:.2f} s"
        )

        await asyncio.sleep(interval_s + 0.3)  # quiet for longer than the interval
        lone = await asyncio.to_thread(submit_to_ledger, ledger, 60)
        committed = time.monotonic()
        assert await read_at(lone) - committed < 0.8 * interval_s, "held back by the interval"
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming


async def test_a_follower_needing_no_events_only_moves_to_the_head(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg)
    _write_history(ledger, 2)
    needed = False
    follower = LedgerFollower(ledger, pg.conninfo, decode_if=lambda: needed, skip_interval_s=0.05)
    batches = follower.batches(None)
    try:
        assert await anext(batches) == [(None, ledger.recorder.max_notification_id())]
        submit_to_ledger(ledger, 98)
        assert await asyncio.wait_for(anext(batches), 5) == [
            (None, ledger.recorder.max_notification_id())
        ]

        needed = True
        job_id = submit_to_ledger(ledger, 99)
        batch = await asyncio.wait_for(anext(batches), 5)
        assert [(type(e), e.originator_id, at) for e, at in batch] == [
            (Job.Submitted, job_id, ledger.recorder.max_notification_id())
        ]
    finally:
        await batches.aclose()


class _Streams:
    """Whether a stream is open, as the gateway's hub tells its follower."""

    def __init__(self) -> None:
        self.opened = False
        self.subscribed = asyncio.Event()

    def open(self) -> None:
        self.opened = True
        self.subscribed.set()

    def follower(self, ledger: JobLedger, pg: PostgresSettings, **options: Any) -> LedgerFollower:
        """A follower that reads events only while a stream is open."""
        return LedgerFollower(
            ledger,
            pg.conninfo,
            decode_if=lambda: self.opened,
            needed_again=self.subscribed,
            **options,
        )


async def _until(probe: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``probe`` without blocking the loop (the follower runs on it)."""
    async with asyncio.timeout(timeout_s):
        while not probe():
            await asyncio.sleep(0.01)


async def test_a_follower_skipping_a_busy_ledger_is_not_sent_every_commit(
    pg: PostgresSettings,
) -> None:
    """The gateway's follower while no stream is open, under a steady rate of commits:
    it reads the head every ``skip_interval_s`` and does not listen meanwhile, so
    PostgreSQL neither signals its backend nor sends it a NOTIFY for each commit. Once
    the ledger is still, it listens again: the next commit wakes it, and so does a
    stream, which then gets every event after the head it last saw."""
    ledger = ledger_store.open_ledger(pg)
    submit_to_ledger(ledger, 0)
    streams = _Streams()
    follower = streams.follower(ledger, pg, skip_interval_s=0.2, idle_poll_s=60)
    heads: list[int] = []

    async def follow() -> list[Any]:
        async with contextlib.aclosing(follower.batches(None)) as batches:
            async for batch in batches:
                if batch[0][0] is not None:
                    return list(batch)
                heads.append(batch[-1][1])
        raise AssertionError("the follower stopped")

    following = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.3)
        for n in range(100):
            await asyncio.to_thread(submit_to_ledger, ledger, n)
            await asyncio.sleep(0.01)
        head = ledger.recorder.max_notification_id()
        await _until(lambda: heads[-1] == head)
        # (a few come while it listens again between two reads that found the head still)
        assert follower.notifications <= 25, f"{follower.notifications} NOTIFYs for 100 commits"

        await asyncio.sleep(0.6)  # still: it listens again, and a commit wakes it
        quiet_at = follower.notifications
        submit_to_ledger(ledger, 100)
        await _until(lambda: heads[-1] == ledger.recorder.max_notification_id())
        assert follower.notifications > quiet_at

        job_id = await asyncio.to_thread(submit_to_ledger, ledger, 101)
        streams.open()
        batch = await asyncio.wait_for(following, 5)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await following
    assert [e.originator_id for e, _ in batch if e is not None] == [job_id]


async def test_a_stream_opened_while_the_head_is_read_is_not_passed_by(
    pg: PostgresSettings,
) -> None:
    ledger = ledger_store.open_ledger(pg)
    job_id = submit_to_ledger(ledger, 0)
    asked = iter([False])  # no stream before the head is read; one open from then on
    follower = LedgerFollower(ledger, pg.conninfo, decode_if=lambda: next(asked, True))
    batches = follower.batches(None)
    try:
        batch = await asyncio.wait_for(anext(batches), 5)
    finally:
        await batches.aclose()
    assert [(type(e), e.originator_id) for e, _ in batch] == [(Job.Submitted, job_id)]


async def test_a_follower_stops_when_told_to_as_a_commit_wakes_it(
    pg: PostgresSettings,
) -> None:
    """A stop that lands in the loop step after a commit's NOTIFY woke the follower
    (common while the ledger is busy) still stops it. Python 3.11's
    ``asyncio.wait_for`` returned the wake-up and dropped the cancel: a dispatcher
    told to stop under load went on following the ledger until it was killed."""
    ledger = ledger_store.open_ledger(pg)
    follower = LedgerFollower(ledger, pg.conninfo, idle_poll_s=60)

    async def follow() -> None:
        async for _ in follower.batches(None):
            pass

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.5)  # parked: waiting for a NOTIFY
    assert not following.done()
    with psycopg.connect(pg.conninfo, autocommit=True) as other:
        other.execute(f"NOTIFY {follower.channel}")
    time.sleep(0.2)  # (blocking the loop) the NOTIFY reaches the follower's socket
    loop = asyncio.get_running_loop()
    # The next loop step runs the follower's socket callback; the cancel comes in
    # the step after it, as a stop in another task would.
    loop.call_soon(loop.call_soon, following.cancel)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await following


class _Wakeups:
    """Counts the event loop's wake-ups (each return from its selector)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        select = selector.select

        def counted(timeout: float | None = None) -> Any:
            ready = select(timeout)
            self.count += 1
            return ready

        selector.select = counted
        try:
            yield
        finally:
            selector.select = select


@pytest.fixture
def quiet_pg() -> Iterator[PostgresSettings]:
    """A database of its own: the ledger's NOTIFY channel is named after its table,
    not its schema, so the other test processes' commits would wake a follower in a
    schema of the shared database."""
    settings = PostgresSettings(dbname=f"jl_quiet_{uuid.uuid4().hex[:10]}")
    ledger_store.ensure_database(settings)
    yield settings
    with psycopg.connect(_pg_conninfo("postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{settings.dbname}" WITH (FORCE)')


def test_an_idle_follower_sleeps_until_a_commit(quiet_pg: PostgresSettings) -> None:
    asyncio.run(_an_idle_follower_sleeps_until_a_commit(quiet_pg))  # a loop nothing else wakes


async def _an_idle_follower_sleeps_until_a_commit(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg)
    submit_to_ledger(ledger, 0)
    follower = LedgerFollower(ledger, pg.conninfo, idle_poll_s=30)
    batches = follower.batches(None)
    wakeups = _Wakeups()
    try:
        await asyncio.wait_for(anext(batches), 5)
        following = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.2)  # it reads, finds nothing and waits
        with wakeups.counting():
            await asyncio.sleep(2)  # a wake-up of its own
        assert not following.done()
        job_id = await asyncio.to_thread(submit_to_ledger, ledger, 1)
        batch = await asyncio.wait_for(following, 5)
    finally:
        await batches.aclose()
    assert [e.originator_id for e, _ in batch] == [job_id]
    # Before, psycopg's wait woke the loop every 100 ms.
    assert wakeups.count <= 3, f"{wakeups.count} wake-ups in 2 s of idling"


def test_a_skipping_follower_is_woken_by_a_stream_and_not_by_a_clock(
    quiet_pg: PostgresSettings,
) -> None:
    asyncio.run(_a_skipping_follower_is_woken_by_a_stream(quiet_pg))


async def _a_skipping_follower_is_woken_by_a_stream(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg)
    submit_to_ledger(ledger, 0)
    streams = _Streams()
    follower = streams.follower(ledger, pg, skip_interval_s=30)
    batches = follower.batches(None)
    wakeups = _Wakeups()
    try:
        assert await anext(batches) == [(None, ledger.recorder.max_notification_id())]
        following = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.2)
        with wakeups.counting():
            await asyncio.sleep(2)
        assert not following.done()
        job_id = await asyncio.to_thread(submit_to_ledger, ledger, 1)
        streams.open()
        batch = await asyncio.wait_for(following, 2)  # not the 30 s of skip_interval_s
    finally:
        await batches.aclose()
    assert [e.originator_id for e, _ in batch] == [job_id]
    # Before, it asked ``decode_if`` every 10 ms.
    assert wakeups.count <= 3, f"{wakeups.count} wake-ups in 2 s of skipping"
