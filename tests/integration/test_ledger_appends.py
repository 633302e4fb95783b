"""The ledger's appends as one call of its function (infra/ledger_recorder.py), and
its pool's pings only for connections that sat idle (infra/ledger_store.py), against
the real PostgreSQL: what an append did before, it still does."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from domain.errors import DuplicateSubmission
from domain.job import Job
from infra import ledger_store
from infra.ledger_recorder import LedgerRecorder
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import LEDGER_ORIGIN, eventually, submit_to_ledger


def _job(n: int, job_id: uuid.UUID | None = None) -> Job:
    return Job.submit(
        job_id=job_id or uuid.uuid4(),
        tenant="t1",
        case_id="case-1",
        job_type="echo",
        params={"n": n},
        pool="default",
        max_attempts=1,
        origin=LEDGER_ORIGIN,
    )


def _rows(pg: PostgresSettings, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.conninfo) as conn:
        return conn.execute(
            f"SELECT originator_id, originator_version, notification_id, hash IS NOT NULL "
            f"FROM {pg.schema_}.{table} ORDER BY notification_id"
        ).fetchall()


def test_a_batch_appends_in_order_with_its_positions_and_chain(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    assert isinstance(ledger.recorder, LedgerRecorder)
    jobs = [_job(n) for n in range(5)]

    committed = ledger.submit_jobs(jobs)

    rows = _rows(pg, ledger_store.events_table_name(ledger))
    assert [(r[0], r[1]) for r in rows] == [(job.id, 1) for job in jobs]
    assert [c.position for c in committed] == [r[2] for r in rows]
    assert all(r[3] for r in rows)  # every event chained by the trigger
    assert ledger.read_job(jobs[3].id).params == {"n": 3}


async def test_a_taken_id_is_refused_and_the_rest_of_a_group_commit_stands(
    pg: PostgresSettings,
) -> None:
    ledger = ledger_store.open_ledger(pg)  # group commit on
    taken = submit_to_ledger(ledger, 0)
    duplicate = _job(1, taken)
    fresh = [_job(n) for n in range(2, 6)]

    answers = await asyncio.gather(
        *(ledger.append_submitted_async(job) for job in [*fresh[:2], duplicate, *fresh[2:]]),
        return_exceptions=True,
    )

    assert isinstance(answers[2], DuplicateSubmission)
    for job, answer in zip(fresh, answers[:2] + answers[3:], strict=True):
        assert not isinstance(answer, BaseException) and answer.position > 0
        assert ledger.read_job(job.id).status == "queued"


def test_an_append_waits_for_the_table_lock_of_an_insert_in_progress(
    pg: PostgresSettings,
) -> None:
    """An insert holds only a row lock on the table; the append takes the table's
    EXCLUSIVE lock, so it waits until that insert commits: positions are committed in
    the order they were taken, and a follower never sees a later one first."""
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    table = f"{pg.schema_}.{ledger_store.events_table_name(ledger)}"
    appended = threading.Event()
    with psycopg.connect(pg.conninfo) as holder:
        holder.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")

        def append() -> None:
            submit_to_ledger(ledger, 1)
            appended.set()

        thread = threading.Thread(target=append)
        thread.start()
        with psycopg.connect(pg.conninfo, autocommit=True) as watcher:
            eventually(
                lambda: watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s",
                    (f"%{ledger_store.events_table_name(ledger)}_append%",),
                ).fetchone(),
                what="the append waiting for the table lock",
            )
        assert not appended.is_set()
        holder.commit()
    thread.join(timeout=30)
    assert appended.is_set()


def test_an_append_notifies_the_followers_when_it_commits(pg: PostgresSettings) -> None:
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    recorder: Any = ledger.recorder
    with psycopg.connect(pg.conninfo, autocommit=True) as listener:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        submit_to_ledger(ledger, 1)
        notices = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in notices] == [recorder.channel_name]


def test_only_an_append_calling_for_a_message_notifies_the_dispatcher(
    pg: PostgresSettings,
) -> None:
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    recorder: Any = ledger.recorder
    with psycopg.connect(pg.conninfo, autocommit=True) as listener:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        listener.execute(f'LISTEN "{recorder.dispatch_channel}"')
        job_id = submit_to_ledger(ledger, 1)
        ledger.start_job(job_id, 1, "w1", LEDGER_ORIGIN)
        ledger.complete_job(job_id, {}, LEDGER_ORIGIN)
        notices = [n.channel for n in listener.notifies(timeout=2, stop_after=4)]
    assert notices == [
        recorder.channel_name,
        recorder.dispatch_channel,  # the submit's
        recorder.channel_name,  # the start's
        recorder.channel_name,  # the success's
    ]


def test_a_ledger_in_another_schema_notifies_channels_of_its_own(
    pg: PostgresSettings, postgres: str, schema: str
) -> None:
    other = PostgresSettings(dbname=postgres, schema=f"{schema}_b")
    ledger_store.ensure_database(other)
    try:
        ours: Any = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False)).recorder
        theirs = ledger_store.open_ledger(other, LedgerSettings(group_commit=False))
        with psycopg.connect(pg.conninfo, autocommit=True) as listener:
            listener.execute(f'LISTEN "{ours.channel_name}"')
            listener.execute(f'LISTEN "{ours.dispatch_channel}"')
            submit_to_ledger(theirs, 1)
            assert list(listener.notifies(timeout=1)) == []
    finally:
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other.schema_}" CASCADE')


def _backend_pid(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid


def _terminate(pg: PostgresSettings, *pids: int) -> None:
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_is_pinged_only_after_sitting_idle(pg: PostgresSettings) -> None:
    check = ledger_store._PingWhenIdle(idle_s=0.3)
    with psycopg.connect(pg.conninfo) as conn:
        check(conn)  # first hand-out: pinged, alive
        _terminate(pg, _backend_pid(conn))
        check(conn)  # in steady use: not pinged, so its death is not seen yet
        time.sleep(0.4)
        with pytest.raises(psycopg.OperationalError):
            check(conn)  # idle long enough: pinged, and found dead


def test_the_ledger_writes_through_connections_cut_while_in_steady_use(
    pg: PostgresSettings,
) -> None:
    """Connections killed between two uses close together are not pinged before the
    next: that use fails, and the event store's retry writes through a new one."""
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    pool: Any = ledger.recorder.datastore.pool  # type: ignore[attr-defined]
    submit_to_ledger(ledger, 0)
    held = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
    pids = [_backend_pid(conn) for conn in held]
    for conn in held:
        pool.putconn(conn)
    for conn in held:
        pool._check(conn)  # as if just handed out: the next hand-out will not ping
    _terminate(pg, *pids)

    job_id = submit_to_ledger(ledger, 1)

    assert ledger.read_job(job_id).params == {"n": 1}
    rows = [r for r in _rows(pg, ledger_store.events_table_name(ledger)) if r[0] == job_id]
    assert len(rows) == 1
