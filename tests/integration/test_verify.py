"""jobledger verify: a ledger that holds together passes; an edited view, a missing or
extra row and a history the state machine could not have made each fail it, named."""

from __future__ import annotations

import uuid

import psycopg

from domain.job import Job
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import PG, Stack, _pg_conninfo, eventually, submit, wait_for_status


def test_verify_passes_a_sound_ledger_and_names_every_kind_of_damage(running: Stack) -> None:
    with running.client() as client:
        ok = submit(client, "echo", {"text": "fine"})
        bad = submit(client, "fail", {})
        flaky = submit(client, "flaky", {"fail_attempts": 1})
        for job in (ok, bad, flaky):
            wait_for_status(client, job["id"], timeout_s=30)
        eventually(lambda: len(client.get("/jobs/case-1/jobs").json()["items"]) == 3, 10)
    sound = running.cli("verify")
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert "verify: passed" in sound.stdout

    schema = running.env["JOBLEDGER_POSTGRES__SCHEMA"]
    ghost = uuid.uuid4()
    with psycopg.connect(_pg_conninfo(PG["dbname"]), autocommit=True) as conn:
        conn.execute(
            f"UPDATE {schema}.job_view SET status = 'succeeded' WHERE job_id = %s", (bad["id"],)
        )
        conn.execute(f"DELETE FROM {schema}.job_view WHERE job_id = %s", (ok["id"],))
        conn.execute(
            f"INSERT INTO {schema}.job_view SELECT %s, tenant, case_id, job_type, status, "
            "progress, progress_message, attempt, max_attempts, error, result, correlation_id, "
            "cancel_requested, submitted_by, submitted_at, started_at, finished_at, retry_at, "
            f"updated_at, submitted_position, position FROM {schema}.job_view WHERE job_id = %s",
            (ghost, flaky["id"]),
        )
    settings = PostgresSettings(dbname=PG["dbname"], schema=schema)
    ledger = ledger_store.open_ledger(settings, LedgerSettings(group_commit=False))
    try:  # a second start, around the command that would refuse it
        job = ledger.get_job(uuid.UUID(flaky["id"]))
        job.trigger_event(
            Job.Started,
            tenant=job.tenant,
            case_id=job.case_id,
            job_type=job.job_type,
            pool=job.pool,
            attempt=job.attempt,
            actor="forger",
            correlation_id="c",
            traceparent="",
            worker_id="forger",
            delivery_id="",
        )
        ledger.save(job)
    finally:
        ledger.close()

    damaged = running.cli("verify")

    assert damaged.returncode == 1
    out = damaged.stdout
    assert f"view of {bad['id']} differs from the ledger in: status" in out
    assert f"view of {ok['id']} differs from the ledger in: missing" in out
    assert f"view row of {ghost}: no such job in the ledger" in out
    assert f"invalid history of {flaky['id']}: event" in out and "after succeeded" in out
    assert "verify: FAILED" in out
