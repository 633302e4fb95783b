"""Starting up: before PostgreSQL is there, and many processes at once on a new
database."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from infra import ledger_store
from infra.settings import PostgresSettings
from tests.faults import TcpProxy, free_port
from tests.integration.conftest import (
    PG,
    Stack,
    _pg_conninfo,
    eventually,
    submit,
    wait_for_status,
)


def test_a_stack_started_before_postgresql_waits_for_it_and_then_runs_jobs(
    stack: Stack,
) -> None:
    """PostgreSQL is where the settings say only a while after the processes start (a
    proxy opens there later): they wait for it (they exited with code 2)."""
    port = free_port()
    process = stack.start("run", JOBLEDGER_POSTGRES__PORT=str(port))
    eventually(
        lambda: (
            process.poll() is not None or "cannot open the ledger" in stack.logs[-1].read_text()
        ),
        60,
        "the process to wait for PostgreSQL, or to give up",
    )
    assert process.poll() is None, stack.logs[-1].read_text()[-2000:]
    with TcpProxy(PG["host"], int(PG["port"]), listen_port=port):
        stack.wait_ready()
        with stack.client() as client:
            job = submit(client, "echo", {"text": "late database"})
            assert wait_for_status(client, job["id"])["status"] == "succeeded"
    assert "cannot open the ledger" in stack.logs[-1].read_text()
    # PostgreSQL gone again: a stop still ends (the dispatcher waited out its pool's
    # 30 s timeout and more, to record a position it publishes again at its next start).
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no stop within 20 s:\n{stack.logs[-1].read_text()[-4000:]}")


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"jobledger_race_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(_pg_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_processes_starting_together_on_a_new_database_all_start(fresh_database: str) -> None:
    """Each creates the database and its schema if missing, and finds both there when
    it returns; the losers of that race carry on (the projector crashed with
    DuplicateDatabase, and a loser went on without its schema)."""
    settings = PostgresSettings(dbname=fresh_database, schema="race")
    errors: list[BaseException] = []
    go = threading.Barrier(8)

    def start() -> None:
        go.wait()
        try:
            ledger_store.ensure_database(settings)
            with psycopg.connect(_pg_conninfo(fresh_database)) as conn:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'race'")
                assert found.fetchone(), "ensure_database returned without the schema"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with psycopg.connect(_pg_conninfo(fresh_database)) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'race'").fetchone()


@pytest.mark.parametrize("command", ["worker", "dispatcher", "run"])
def test_a_process_stopped_while_its_broker_connect_hangs_stops_at_once(
    stack: Stack, command: str
) -> None:
    """The broker's port accepts and then says nothing (a broker starting, a network
    eating packets): SIGTERM ends the process at once. It waited out the connect's
    10-s timeout; and a cancelled connect went on reconnecting on its own, which a
    test's stack, stopped right after start on a busy machine, waited 30 s for."""
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    url = stack.env["JOBLEDGER_AMQP__URL"].replace(":5672/", f":{port}/")
    process = stack.start(command, JOBLEDGER_AMQP__URL=url)
    try:
        eventually(lambda: accepted or process.poll() is not None, 60, "a connect to begin")
        assert process.poll() is None, stack.logs[-1].read_text()[-2000:]
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} did not stop in 30 s:\n{stack.logs[-1].read_text()[-3000:]}")
        took = time.monotonic() - began
        assert process.returncode == 0, stack.logs[-1].read_text()[-2000:]
        log = stack.logs[-1].read_text()
        assert took < 5, f"{command} took {took:.1f}s to stop:\n{log}"
        assert "never retrieved" not in log, log  # a start cut short leaves nothing dangling
    finally:
        silent.close()
        for conn in accepted:
            conn.close()
