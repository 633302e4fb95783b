"""A worker's heartbeat, read from the workers table it writes: sparse while the
worker handles nothing, as often as configured once it takes a job."""

from __future__ import annotations

import time
from datetime import datetime

import psycopg
from psycopg import sql

from tests.integration.conftest import (
    Stack,
    _pg_conninfo,
    start_workers,
    submit,
    wait_for_status,
)


def beats_of(stack: Stack, seconds: float) -> list[datetime]:
    """Every beat the default pool's worker writes over ``seconds`` (its
    ``heartbeat_at``, read every 20 ms)."""
    seen: list[datetime] = []
    query = sql.SQL("SELECT heartbeat_at FROM {}.workers WHERE pool = 'default'").format(
        sql.Identifier(stack.env["JOBLEDGER_POSTGRES__SCHEMA"])
    )
    deadline = time.monotonic() + seconds
    with psycopg.connect(_pg_conninfo(stack.env["JOBLEDGER_POSTGRES__DBNAME"])) as conn:
        conn.autocommit = True
        while time.monotonic() < deadline:
            for (beat,) in conn.execute(query).fetchall():
                if beat not in seen:
                    seen.append(beat)
            time.sleep(0.02)
    return seen


def test_an_idle_worker_beats_seldom_and_a_busy_one_as_configured(stack: Stack) -> None:
    """A beat every 0.5 s while it runs a job; handling none, every half of its 8 s
    TTL. Once a job is taken, beats come every 0.5 s again at once, not at the end of
    the idle wait."""
    start_workers(
        stack, JOBLEDGER_WORKER__HEARTBEAT_INTERVAL_S="0.5", JOBLEDGER_WORKER__HEARTBEAT_TTL_S="8"
    )
    idle = beats_of(stack, 5.0)
    # At most two beats land in 5 s at 4 s apart (the last beat of the start-up may
    # be one of them); at 0.5 s apart there would be ten.
    assert 1 <= len(idle) <= 3, idle

    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 4})
        wait_for_status(client, job["id"], {"running"})
        busy = beats_of(stack, 3.0)
        done = wait_for_status(client, job["id"], timeout_s=30)
    assert done["status"] == "succeeded"
    # Six at 0.5 s apart; at 4 s apart, at most one.
    assert len(busy) >= 3, busy
