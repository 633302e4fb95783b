"""jobledger replay: the job view rebuilt from the first event beside the live one,
compared with it (--verify), resumed after an interruption, and swapped in while the
whole system runs (--swap)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import Tracking
from psycopg.rows import dict_row

from domain.job import Job
from domain.ledger import JobLedger
from infra import ledger_store
from infra.replay import Replay
from infra.settings import LedgerSettings, PostgresSettings
from projections.projection import JobProjection, JobRow, differences
from tests.integration.conftest import (
    LEDGER_ORIGIN,
    PG,
    ROOT,
    Stack,
    _pg_conninfo,
    eventually,
    submit,
    submit_to_ledger,
    wait_for_status,
)


def _settings(stack: Stack) -> PostgresSettings:
    return PostgresSettings(dbname=PG["dbname"], schema=stack.env["JOBLEDGER_POSTGRES__SCHEMA"])


def _write_history(ledger: JobLedger, jobs: int) -> list[uuid.UUID]:
    """Jobs with every kind of history: succeeded, failed, waiting for a retry,
    cancelled, still queued; each job's events interleaved with the others'."""
    ids = [submit_to_ledger(ledger, n, max_attempts=2) for n in range(jobs)]
    for n, job_id in enumerate(ids):
        if n % 5 == 4:
            continue  # stays queued
        if n % 5 == 3:
            ledger.cancel_job(job_id, LEDGER_ORIGIN)
            continue
        ledger.start_job(job_id, 1, "w1", LEDGER_ORIGIN)
    for n, job_id in enumerate(ids):
        if n % 5 in (3, 4):
            continue
        ledger.report_progress(job_id, 40 + n % 50, f"step {n}", LEDGER_ORIGIN)
        if n % 5 == 0:
            ledger.complete_job(job_id, {"n": n, "nested": {"ok": True}}, LEDGER_ORIGIN)
        elif n % 5 == 1:
            ledger.fail_attempt(
                job_id, "boom", retryable=False, retry_delay_s=None, origin=LEDGER_ORIGIN
            )
        else:
            ledger.fail_attempt(
                job_id, "again", retryable=True, retry_delay_s=30.0, origin=LEDGER_ORIGIN
            )
    return ids


def _ledger_with_a_live_view(stack: Stack, jobs: int) -> tuple[JobLedger, list[uuid.UUID], int]:
    """A ledger of ``jobs`` jobs and a live projector that has projected all of it."""
    pg = _settings(stack)
    ledger_store.ensure_database(pg)
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    ids = _write_history(ledger, jobs)
    head = int(ledger.recorder.max_notification_id() or 0)
    stack.start("projector")
    eventually(lambda: _tracked(stack, "job_view_tracking") == head, 30, "the live view")
    return ledger, ids, head


def _backends(application_name: str) -> int:
    """PostgreSQL's backends still serving connections of that application name."""
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


def _tracked(stack: Stack, table: str) -> int:
    schema = stack.env["JOBLEDGER_POSTGRES__SCHEMA"]
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        try:
            row = conn.execute(
                f"SELECT notification_id FROM {schema}.{table} WHERE application_name = %s",
                (JobLedger.name,),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row and row[0] is not None else 0


def _locked(stack: Stack, table: str) -> bool:
    schema = stack.env["JOBLEDGER_POSTGRES__SCHEMA"]
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass "
            "AND mode = 'AccessExclusiveLock' AND granted",
            (f"{schema}.{table}",),
        ).fetchone()
    return bool(row and row[0])


def _rows(stack: Stack, table: str) -> dict[uuid.UUID, JobRow]:
    schema = stack.env["JOBLEDGER_POSTGRES__SCHEMA"]
    with psycopg.connect(_pg_conninfo(PG["dbname"]), row_factory=dict_row) as conn:
        return {
            row["job_id"]: JobRow(**row)
            for row in conn.execute(f"SELECT * FROM {schema}.{table}").fetchall()
        }


def _assert_equals_the_ledger(
    rows: dict[uuid.UUID, JobRow], ledger: JobLedger, ids: list[Any]
) -> None:
    assert set(rows) == set(ids)
    for job_id in ids:
        assert differences(rows[job_id], ledger.get_job(job_id)) == [], job_id


def test_verify_passes_a_sound_view_and_names_the_job_and_field_of_an_edited_one(
    stack: Stack,
) -> None:
    ledger, ids, head = _ledger_with_a_live_view(stack, 40)

    sound = stack.cli("replay", "--verify", "--batch", "17")

    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert f"verify: 40 jobs compared at ledger position {head}: 0 differ" in sound.stdout
    _assert_equals_the_ledger(_rows(stack, "job_view_rebuild"), ledger, ids)

    schema = stack.env["JOBLEDGER_POSTGRES__SCHEMA"]
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.job_view SET progress = 99 WHERE job_id = %s", (ids[7],))
        conn.execute(
            f"UPDATE {schema}.job_view SET status = 'succeeded', error = NULL WHERE job_id = %s",
            (ids[11],),
        )

    damaged = stack.cli("replay", "--verify")

    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert "40 jobs compared" in damaged.stdout and "2 differ" in damaged.stdout
    assert f"job {ids[7]}: progress" in damaged.stdout
    assert f"job {ids[11]}: status, error" in damaged.stdout
    assert "verify: FAILED" in damaged.stdout
    ledger.close()


def test_an_interrupted_rebuild_resumes_from_its_own_position(stack: Stack) -> None:
    ledger, ids, head = _ledger_with_a_live_view(stack, 150)

    first = stack.cli("replay", "--batch", "10", "--stop-after", "50")

    assert first.returncode == 3, first.stdout + first.stderr
    reached = _tracked(stack, "job_view_rebuild_tracking")
    assert 50 <= reached < head

    # kill -9 in the middle of a run: what it committed stays, the rest is redone.
    # Its connections are named, so the test can wait for their backends to end: a
    # COMMIT sent just before the kill still lands after the process is gone.
    app_name = f"killed-replay-{uuid.uuid4().hex[:8]}"
    env = {**stack.env, "PYTHONPATH": str(ROOT), "PGAPPNAME": app_name}
    killed = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "replay", "--batch", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while _tracked(stack, "job_view_rebuild_tracking") <= reached + 20:  # an event a commit
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    eventually(lambda: _backends(app_name) == 0, 10, "the killed replay's backends to end")
    after_kill = _tracked(stack, "job_view_rebuild_tracking")
    assert reached < after_kill < head  # killed mid-run

    resumed = stack.cli("replay", "--batch", "10")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    remaining = head - after_kill
    assert f"replay: {remaining:,} events rebuilt" in resumed.stdout  # not from 0
    assert f"is at ledger position {head:,}" in resumed.stdout
    _assert_equals_the_ledger(_rows(stack, "job_view_rebuild"), ledger, ids)

    again = stack.cli("replay", "--restart", "--batch", "1000")

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"is at ledger position {head:,}" in again.stdout
    _assert_equals_the_ledger(_rows(stack, "job_view_rebuild"), ledger, ids)
    ledger.close()


def test_swap_while_the_system_runs_keeps_the_gateway_answering_and_the_projector_going(
    running: Stack,
) -> None:
    with running.client() as client:
        first = [submit(client, "echo", {"text": f"before {n}"}) for n in range(20)]
        for job in first:
            wait_for_status(client, job["id"])
    stop = threading.Event()
    answers: list[int] = []
    submitted: list[str] = []

    def read() -> None:
        with running.client() as reader:
            while not stop.is_set():
                answers.append(reader.get("/jobs/case-1/jobs", params={"limit": 5}).status_code)
                answers.append(reader.get("/readyz").status_code)

    def write() -> None:
        with running.client() as writer:
            while not stop.is_set():
                submitted.append(submit(writer, "echo", {"text": "during"}, case_id="case-2")["id"])
                time.sleep(0.02)

    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        swap = running.cli("replay", "--swap", "--batch", "25", timeout_s=120)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert swap.returncode == 0, swap.stdout + swap.stderr
    assert "replay: swapped in at ledger position" in swap.stdout
    assert answers and all(code == 200 for code in answers), sorted(set(answers))
    assert len(submitted) > 5
    schema = running.env["JOBLEDGER_POSTGRES__SCHEMA"]
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'job_view'",
                (schema,),
            ).fetchall()
        }
    assert "job_view_rebuild" not in tables
    assert any(t.startswith("job_view_old_") and t.endswith("_tracking") for t in tables)
    assert {"job_view_pkey", "job_view_case_idx", "job_view_tenant_position_idx"} <= indexes

    with running.client() as client:
        after = submit(client, "echo", {"text": "after"}, case_id="case-3")
        wait_for_status(client, after["id"])
        for job_id in submitted:
            wait_for_status(client, job_id)

        def listed() -> bool:
            items = client.get("/jobs/case-3/jobs").json()["items"]
            return [(j["id"], j["status"]) for j in items] == [(after["id"], "succeeded")]

        eventually(listed, 30, "the projector to project a job submitted after the swap")
        during = len(client.get("/jobs/case-2/jobs", params={"limit": 200}).json()["items"])
        assert during == min(len(submitted), 200)
    # The rebuild took over at the live view's own position: the projector never met
    # a position already applied, nor an event the new view refused.
    log = running.logs[0].read_text()
    assert "already applied" not in log and "unprojectable" not in log, log[-3000:]
    verified = running.cli("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = running.cli("replay", "--verify")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_projector_write_and_a_read_blocked_by_the_swap_land_on_the_rebuilt_view(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the swap relies on, with the projector's own statements: a transaction
    that waits for the swap's lock, on a statement prepared before it, writes the
    table that bears the name once the swap commits, and a read waiting alike reads it."""
    ledger, ids, _ = _ledger_with_a_live_view(stack, 10)
    stack.stop(stack.processes[0])
    pg = _settings(stack)
    live = ledger_store.open_view(pg)
    replay = Replay(pg, ledger, live, ledger_store.open_rebuild(pg), quiet=True)
    projection = JobProjection()

    def project(position: int) -> None:
        ((event, at),) = replay.events.read(replay.events.after_until, (position - 1, position, 1))
        live.apply(list(projection.changes(event, at)), Tracking(ledger.name, at))

    job_id = ids[4]  # still queued
    first = ledger.start_job(job_id, 1, "w2", LEDGER_ORIGIN).position
    project(first)  # prepares the projector's statements on its connection
    for _ in range(6):  # and the gateway's read (psycopg prepares from the 5th)
        assert live.get(job_id) is not None
    second = ledger.report_progress(job_id, 62, "during the swap", LEDGER_ORIGIN).position
    blocked: dict[str, Any] = {}
    build = replay.build

    def build_under_the_lock(until: int, *, progress: bool = True) -> int:
        reached = build(until, progress=progress)
        if _locked(stack, "job_view"):  # the swap's own catch-up, under its lock
            # A mark only the rebuilt row bears, until the write replaces it.
            with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
                conn.execute(
                    f"UPDATE {pg.schema_}.job_view_rebuild SET progress_message = 'rebuilt' "
                    "WHERE job_id = %s",
                    (job_id,),
                )
            writer = threading.Thread(target=project, args=(second,))
            reader = threading.Thread(target=lambda: blocked.update(read=live.get(job_id)))
            writer.start()
            reader.start()
            time.sleep(0.5)
            blocked["waiting"] = writer.is_alive() and reader.is_alive()
            blocked["threads"] = (writer, reader)
        return reached

    monkeypatch.setattr(replay, "build", build_under_the_lock)
    old, at = replay.swap()
    for thread in blocked["threads"]:
        thread.join(10)

    assert at == first
    assert blocked["waiting"]  # both waited for the swap
    assert blocked["read"].progress_message in ("rebuilt", "during the swap")
    assert _tracked(stack, "job_view_tracking") == second
    assert _tracked(stack, f"{old}_tracking") == first
    rows, former = _rows(stack, "job_view"), _rows(stack, old)
    assert (rows[job_id].progress, rows[job_id].position) == (62, second)
    assert (former[job_id].status, former[job_id].position) == ("running", first)
    assert former[job_id].progress == 0
    _assert_equals_the_ledger(rows, ledger, ids)
    ledger.close()


def test_the_rebuild_sets_aside_the_events_the_live_view_set_aside(stack: Stack) -> None:
    """An event written before values were made storable (a NUL the view refuses):
    the rebuild, written in bulk, falls back to one event at a time as the live
    projector does and sets aside the same event, and nothing else."""
    pg = _settings(stack)
    ledger_store.ensure_database(pg)
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    ids = _write_history(ledger, 12)
    job = Job.submit(
        job_id=uuid.uuid4(),
        tenant="t1",
        case_id="poison",
        job_type="echo",
        params={},
        pool="default",
        max_attempts=1,
        origin=LEDGER_ORIGIN,
    )
    job.start(1, "w", LEDGER_ORIGIN)
    job.trigger_event(  # around the command, which would have made it storable
        Job.ProgressReported,
        tenant="t1",
        case_id="poison",
        job_type="echo",
        pool="default",
        attempt=1,
        actor="w",
        correlation_id="c",
        traceparent="",
        percent=5,
        message="NUL \x00 here",
    )
    ledger.save(job)
    poisoned = int(ledger.recorder.max_notification_id() or 0)
    ids += _write_history(ledger, 12)
    head = int(ledger.recorder.max_notification_id() or 0)
    stack.start("projector")
    eventually(lambda: _tracked(stack, "job_view_tracking") == head, 30, "the live view")

    verified = stack.cli("replay", "--verify", "--batch", "25")

    assert verified.returncode == 0, verified.stdout + verified.stderr
    schema = pg.schema_
    with psycopg.connect(_pg_conninfo(PG["dbname"])) as conn:
        for table in ("job_view_unprojectable", "job_view_rebuild_unprojectable"):
            rows = conn.execute(
                f"SELECT position, job_id, event, reason FROM {schema}.{table}"
            ).fetchall()
            assert rows == [(poisoned, job.id, "ProgressReported", "DataError")], table
    rebuilt = _rows(stack, "job_view_rebuild")
    assert rebuilt[job.id].progress_message == ""  # the event before it, applied
    del rebuilt[job.id]
    _assert_equals_the_ledger(rebuilt, ledger, ids)
    ledger.close()
