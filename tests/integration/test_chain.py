"""The ledger's hash chain: every event's hash is written with it, in its transaction;
`jobledger verify` names an edited, deleted or reordered event, and a head kept
elsewhere (`jobledger audit head`) catches what a job's own chain cannot: its last
events deleted."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import psycopg

from domain.job import Job
from domain.origin import Origin
from infra import ledger_store
from infra.ledger_chain import Head
from infra.settings import LedgerSettings, PostgresSettings
from infra.verify import verify
from tests.integration.conftest import (
    PG,
    Stack,
    _pg_conninfo,
    submit,
    submit_to_ledger,
    wait_for_status,
)

ORIGIN = Origin(actor="test", correlation_id="c", traceparent="")


def _events(schema: str) -> str:
    return f"{schema}.jobledger_events"


def test_verify_names_an_edited_a_deleted_and_a_reordered_event(running: Stack) -> None:
    with running.client() as client:
        jobs = [submit(client, "echo", {"text": str(n)}) for n in range(4)]
        failed = submit(client, "fail", {})  # AttemptFailed and Failed in one insert
        for job in [*jobs, failed]:
            wait_for_status(client, job["id"], timeout_s=30)
    sound = running.cli("verify")
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert re.search(r"jobs whose hash chain is broken +0\n", sound.stdout), sound.stdout
    printed = running.cli("audit", "head")
    assert printed.returncode == 0, printed.stderr
    head = printed.stdout.strip()
    position, _ = Head.parse(head)
    assert f"head {head} " in sound.stdout  # verify prints the same head

    edited, deleted, reordered, truncated = (uuid.UUID(j["id"]) for j in jobs)
    events = _events(running.env["JOBLEDGER_POSTGRES__SCHEMA"])
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        # A field rewritten in place.
        conn.execute(
            f"UPDATE {events} SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'\"worker_id\"', '\"worker_iD\"'), 'UTF8') "
            "WHERE originator_id = %s AND originator_version = 2",
            (edited,),
        )
        conn.execute(
            f"DELETE FROM {events} WHERE originator_id = %s AND originator_version = 2",
            (deleted,),
        )
        # Two events swap their contents (and hashes): each now sits at the wrong place.
        conn.execute(
            f"UPDATE {events} AS a SET state = b.state, topic = b.topic, hash = b.hash, "
            "prev_hash = b.prev_hash FROM {events} AS b "
            "WHERE a.originator_id = %(job)s AND b.originator_id = %(job)s "
            "AND a.originator_version + b.originator_version = 5 "
            "AND a.originator_version IN (2, 3)".replace("{events}", events),
            {"job": reordered},
        )
        last = conn.execute(
            f"DELETE FROM {events} WHERE originator_id = %s AND originator_version = "
            f"(SELECT max(originator_version) FROM {events} WHERE originator_id = %s) "
            "RETURNING originator_version",
            (truncated, truncated),
        ).fetchone()
        assert last is not None and last[0] >= 3

    damaged = running.cli("verify", "--head", head)

    assert damaged.returncode == 1
    out = damaged.stdout
    assert f"hash chain of {edited} broken: version 2 was edited" in out, out
    assert f"hash chain of {deleted} broken: version 2 to 2 deleted" in out, out
    assert f"hash chain of {reordered} broken: version 2 " in out, out
    assert f"{reordered} broken: version 2 does not follow version 1" in out, out
    assert f"hash chain of {truncated}" not in out  # its own chain cannot tell...
    assert f"head at position {position} was " in out  # ...the head can
    assert "verify: FAILED" in out


def test_events_recorded_before_the_chain_load_and_pass_and_later_ones_are_chained(
    pg: PostgresSettings,
) -> None:
    """A ledger from before the chain: its rows keep no hash, count as recorded
    before it, and the events appended after it are chained onto the same jobs."""
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    events = _events(pg.schema_)
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER jobledger_events_chain ON {events}")
        conn.execute(f"ALTER TABLE {events} DROP COLUMN hash, DROP COLUMN prev_hash")
        conn.execute(f"DROP TABLE {pg.schema_}.ledger_chain")
    old = submit_to_ledger(ledger, 1)
    ledger.close()

    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    try:
        ledger.start_job(old, 1, "w", ORIGIN)
        new = submit_to_ledger(ledger, 2)
        report = verify(ledger, ledger_store.open_view(pg), pg.conninfo)
        assert report.unchained == 1 and not report.tampered, report.tampered
        assert report.head is not None and report.head.events == 2

        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute(f"UPDATE {events} SET hash = NULL WHERE originator_id = %s", (new,))
        again = verify(ledger, ledger_store.open_view(pg), pg.conninfo)
    finally:
        ledger.close()
    assert again.tampered == {new: ["version 1 has no hash (its hash was removed)"]}


def test_events_stored_in_an_earlier_shape_still_load(pg: PostgresSettings) -> None:
    """Started v1 had no delivery id, AttemptFailed v1 no traceback: rows of that shape,
    as they were stored then, load through the upcasters."""
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    job_id = submit_to_ledger(ledger, 1, max_attempts=1)
    ledger.start_job(job_id, 1, "w", ORIGIN, delivery_id="d-1")
    ledger.fail_attempt(
        job_id, "boom", retryable=False, retry_delay_s=None, origin=ORIGIN, traceback="tb"
    )
    ledger.close()
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT originator_version, state FROM {_events(pg.schema_)} "
            "WHERE originator_id = %s AND originator_version IN (2, 3)",
            (job_id,),
        ).fetchall()
        for version, state in rows:
            old: dict[str, Any] = json.loads(bytes(state))
            assert old.pop("class_version") == 2
            old.pop("delivery_id" if version == 2 else "traceback")
            conn.execute(
                f"UPDATE {_events(pg.schema_)} SET state = %s "
                "WHERE originator_id = %s AND originator_version = %s",
                (json.dumps(old).encode(), job_id, version),
            )

    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    try:
        started, failed = ledger.job_history(job_id)[1:3]
        job = ledger.get_job(job_id)
    finally:
        ledger.close()
    assert isinstance(started, Job.Started) and started.delivery_id == ""
    assert isinstance(failed, Job.AttemptFailed) and failed.traceback == ""
    assert failed.error == "boom" and job.status == "failed"
