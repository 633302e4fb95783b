"""Delayed jobs through the real stack: scheduled, then run no earlier than run_at; a
scheduled job cancelled never runs; a delay beyond the delay queues' range is kept in
the ledger and handed over, across a kill -9 of every process in between; the view's
columns added in place to a view created before them."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from client import Client
from infra import ledger_store
from infra.settings import PostgresSettings
from tests.integration.conftest import Stack, _pg_conninfo, eventually, wait_for_status


def at(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


def history(client: httpx.Client, job_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()]


def schedule(client: httpx.Client, **when: Any) -> dict[str, Any]:
    body = {"type": "echo", "case_id": "later", "params": {"text": "hi"}, **when}
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_a_delayed_job_is_scheduled_then_runs_no_earlier_than_run_at(running: Stack) -> None:
    with running.client() as client:
        # Delays of whole seconds: a loaded machine may take a second between the
        # request and its decision, and a run_at past by then runs at once (queued).
        job = schedule(client, delay_s=3)
        cancelled = schedule(client, delay_s=2)
        typed = client.post("/jobs/later/echo?delay_s=2", json={"text": "typed"})
        with Client(running.url, running.token()) as jobs:
            by_client = jobs.submit("echo", "later", {"text": "c"}, run_at=at(job["run_at"]))
            assert by_client.get().status == "scheduled"
        assert typed.status_code == 202, typed.text
        assert job["status"] == cancelled["status"] == typed.json()["status"] == "scheduled"
        assert client.post(f"/jobs/{cancelled['id']}/cancel").json()["status"] == "cancelled"

        listed = client.get(
            "/jobs/later/jobs",
            headers={"X-Ledger-Position": typed.headers["X-Ledger-Position"]},
        ).json()["items"]
        assert at({j["id"]: j["run_at"] for j in listed}[job["id"]]) == at(job["run_at"])

        done = wait_for_status(client, job["id"], timeout_s=30)
        assert done["status"] == "succeeded"
        assert at(done["started_at"]) >= at(job["run_at"])
        wait_for_status(client, typed.json()["id"], timeout_s=30)
        ran = wait_for_status(client, by_client.id, timeout_s=30)
        assert ran["run_at"] == job["run_at"] and at(ran["started_at"]) >= at(job["run_at"])
        # Its copy arrived a second before the first job's: it was dropped, not run.
        assert history(client, cancelled["id"]) == ["Submitted", "Cancelled"]

        progress = client.get(f"/jobs/{job['id']}/progress").text
        assert '"status":"scheduled"' in progress.replace(" ", "")
        refuses_bad_times(client)  # on the same stack: one start fewer


def refuses_bad_times(client: httpx.Client) -> None:
    """Both times, a time beyond the horizon or without its offset: 422 with the
    reason; a time past runs now."""
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    both = client.post(
        "/jobs",
        json={
            "type": "echo",
            "case_id": "c",
            "params": {"text": "x"},
            "run_at": soon,
            "delay_s": 5,
        },
    )
    assert both.status_code == 422 and "not both" in both.text
    typed_both = client.post(
        "/jobs/c/echo", params={"delay_s": 1, "run_at": soon}, json={"text": "x"}
    )
    assert typed_both.status_code == 422 and "not both" in typed_both.text
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    beyond = client.post(
        "/jobs", json={"type": "echo", "case_id": "c", "params": {"text": "x"}, "run_at": far}
    )
    assert beyond.status_code == 422 and "horizon" in beyond.text
    assert beyond.json()["detail"][0]["loc"] == ["body", "run_at"]
    no_offset = client.post(
        "/jobs",
        json={
            "type": "echo",
            "case_id": "c",
            "params": {"text": "x"},
            "run_at": "2030-01-01T00:00:00",
        },
    )
    assert no_offset.status_code == 422
    past = schedule(client, run_at="2020-01-01T00:00:00Z")
    assert past["status"] == "queued" and past["run_at"] is None


def test_a_delay_beyond_the_delay_queues_is_handed_over_across_a_restart(
    stack: Stack,
) -> None:
    """Two delay levels carry 3 s at most: delays of 5 and 6 s are kept in the ledger
    and handed over by the dispatcher's pass. Every process (``jobledger run``) is
    killed once the jobs are in the view, before their hand-over is due, and started
    again: nothing is lost, nothing starts before its run_at, each is handed over once."""
    stack.env.update(
        JOBLEDGER_AMQP__DELAY_LEVELS="2", JOBLEDGER_SCHEDULING__HAND_OVER_INTERVAL_S="0.5"
    )
    first = stack.start("run")
    stack.wait_ready()
    with stack.client() as client:
        jobs = [schedule(client, delay_s=6), schedule(client, delay_s=5)]
        eventually(lambda: len(client.get("/jobs/later/jobs").json()["items"]) == 2, 10, "the view")
        first.send_signal(signal.SIGKILL)
        first.wait()
        stack.processes.remove(first)
        stack.logs.pop(0)
        stack.start("run")
        stack.wait_ready()
        for job in jobs:
            done = wait_for_status(client, job["id"], timeout_s=30)
            assert done["status"] == "succeeded"
            assert at(done["started_at"]) >= at(job["run_at"])
            assert history(client, job["id"])[:3] == ["Submitted", "HandedOver", "Started"]
    verified = stack.cli("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_view_created_before_delayed_jobs_gets_their_columns_in_place(
    pg: PostgresSettings, postgres: str
) -> None:
    view = ledger_store.open_view(pg)
    with psycopg.connect(_pg_conninfo(postgres), autocommit=True) as conn:
        conn.execute(f"DROP INDEX {pg.schema_}.job_view_held_idx")
        conn.execute(
            f"ALTER TABLE {view.names[0]}.job_view DROP COLUMN run_at, DROP COLUMN handed_over"
        )
    ledger_store.open_view(pg)
    with psycopg.connect(_pg_conninfo(postgres), autocommit=True) as conn:
        columns = {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'job_view'",
                (pg.schema_,),
            )
        }
    assert {"run_at", "handed_over"} <= columns
