"""Worker liveness and shared limits, in PostgreSQL beside the ledger.

- ``workers``: one row per worker process, its heartbeat and the jobs it holds, as
  listed at ``in_flight_at`` (the worker's own clock, which also stamps its events).
  Each beat says how long it holds (``alive_until``: now plus the worker's own
  heartbeat TTL); a worker past it is dead and its attempts are lost. A
  live worker holds the attempts its list names, and every attempt it started after
  the list was made: from the moment its Started commits, not from its next beat.
- ``job_leases``: one row per running job of a type with ``max_running``; only
  leases of live workers count, so a dead worker's leases free themselves.
- ``rate_buckets``: a token bucket per job type with ``per_second``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from consumers.registry import Limits

RETRY_POLL_S = 1.0

DDL = [
    "CREATE TABLE IF NOT EXISTS {s}.workers (worker_id text PRIMARY KEY, pool text NOT NULL, "
    "started_at timestamptz NOT NULL DEFAULT now(), heartbeat_at timestamptz NOT NULL, "
    "in_flight jsonb NOT NULL DEFAULT '[]')",
    "ALTER TABLE {s}.workers ADD COLUMN IF NOT EXISTS in_flight_at timestamptz",
    "ALTER TABLE {s}.workers ADD COLUMN IF NOT EXISTS alive_until timestamptz",
    "CREATE TABLE IF NOT EXISTS {s}.job_leases (job_id uuid PRIMARY KEY, job_type text NOT NULL, "
    "worker_id text NOT NULL, acquired_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS job_leases_type_idx ON {s}.job_leases (job_type)",
    "CREATE TABLE IF NOT EXISTS {s}.rate_buckets (job_type text PRIMARY KEY, "
    "tokens double precision NOT NULL, refreshed_at timestamptz NOT NULL)",
]


# A worker is alive within the TTL its own last beat gave it (a row written before
# beats carried one: within this process's TTL, the statement's %(ttl)s).
ALIVE = sql.SQL("coalesce(alive_until, heartbeat_at + %(ttl)s::interval) > now()")


class PostgresWorkerStore:
    def __init__(self, datastore: PostgresDatastore, *, heartbeat_ttl_s: float = 10.0) -> None:
        self.datastore = datastore
        self.schema = sql.Identifier(datastore.schema)
        self.ttl = f"{heartbeat_ttl_s} seconds"

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self.schema, alive=ALIVE)

    def create_tables(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for statement in DDL:
                curs.execute(self._sql(statement))

    # Liveness

    def beat(self, worker_id: str, pool: str, in_flight: list[str], listed_at: datetime) -> None:
        # One statement in autocommit (the pool's connections are): its own transaction,
        # without a BEGIN and a COMMIT of round trips of their own, every beat.
        with self.datastore.get_connection() as conn:
            conn.execute(
                self._sql(
                    "INSERT INTO {s}.workers (worker_id, pool, heartbeat_at, in_flight, "
                    "in_flight_at, alive_until) VALUES (%s, %s, now(), %s, %s, "
                    "now() + %s::interval) ON CONFLICT (worker_id) DO UPDATE SET "
                    "heartbeat_at = now(), in_flight = EXCLUDED.in_flight, "
                    "in_flight_at = EXCLUDED.in_flight_at, alive_until = EXCLUDED.alive_until"
                ),
                (worker_id, pool, json.dumps(in_flight), listed_at, self.ttl),
            )

    def forget(self, worker_id: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql("DELETE FROM {s}.workers WHERE worker_id = %s"), (worker_id,))

    def holds(self, worker_id: str, job_id: UUID, started_at: datetime) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                self._sql(
                    "SELECT 1 FROM {s}.workers WHERE worker_id = %(worker)s AND {alive} "
                    "AND (in_flight ? %(job)s OR in_flight_at < %(started)s)"
                ),
                {"worker": worker_id, "ttl": self.ttl, "job": str(job_id), "started": started_at},
            )
            return curs.fetchone() is not None

    def live_workers(self) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                self._sql(
                    "SELECT worker_id, pool, started_at, heartbeat_at, in_flight FROM {s}.workers "
                    "WHERE {alive} ORDER BY worker_id"
                ),
                {"ttl": self.ttl},
            )
            return list(curs.fetchall())

    # Limiter

    def acquire(self, job_type: str, job_id: UUID, worker_id: str, limits: Limits) -> float:
        """0 if the job may start now (a lease is taken), else seconds to wait."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"jobledger:{job_type}",))
            if limits.max_running is not None:
                curs.execute(
                    self._sql(
                        "SELECT count(*) AS n FROM {s}.job_leases l JOIN {s}.workers w "
                        "USING (worker_id) WHERE l.job_type = %(type)s AND l.job_id <> %(job)s "
                        "AND {alive}"
                    ),
                    {"type": job_type, "job": job_id, "ttl": self.ttl},
                )
                row = curs.fetchone()
                if row is not None and row["n"] >= limits.max_running:
                    return RETRY_POLL_S
            if limits.per_second:
                wait_s = self._take_token(curs, job_type, limits.per_second)
                if wait_s > 0:
                    return wait_s
            if limits.max_running is not None:
                curs.execute(
                    self._sql(
                        "INSERT INTO {s}.job_leases (job_id, job_type, worker_id) "
                        "VALUES (%s, %s, %s) ON CONFLICT (job_id) DO UPDATE "
                        "SET worker_id = EXCLUDED.worker_id, acquired_at = now()"
                    ),
                    (job_id, job_type, worker_id),
                )
        return 0.0

    def _take_token(self, curs: Any, job_type: str, per_second: float) -> float:
        burst = max(1.0, per_second)
        curs.execute(
            self._sql("INSERT INTO {s}.rate_buckets VALUES (%s, %s, now()) ON CONFLICT DO NOTHING"),
            (job_type, burst),
        )
        curs.execute(
            self._sql(
                "SELECT tokens, extract(epoch FROM now() - refreshed_at) AS dt "
                "FROM {s}.rate_buckets WHERE job_type = %s FOR UPDATE"
            ),
            (job_type,),
        )
        row = curs.fetchone()
        tokens = min(burst, row["tokens"] + float(row["dt"]) * per_second)
        taken = tokens >= 1.0
        curs.execute(
            self._sql(
                "UPDATE {s}.rate_buckets SET tokens = %s, refreshed_at = now() WHERE job_type = %s"
            ),
            (tokens - 1.0 if taken else tokens, job_type),
        )
        return 0.0 if taken else (1.0 - tokens) / per_second

    def release(self, job_id: UUID, worker_id: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._sql("DELETE FROM {s}.job_leases WHERE job_id = %s AND worker_id = %s"),
                (job_id, worker_id),
            )
