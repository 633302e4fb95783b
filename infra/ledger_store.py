"""The PostgreSQL side: the database and schema, the ledger's event store, the job
view and the dispatcher's position, all configured from Settings (never from
os.environ directly)."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresDatastore, PostgresFactory, PostgresTrackingRecorder
from eventsourcing.utils import Environment
from psycopg import sql
from psycopg_pool import ConnectionPool

from domain.group_commit import ReadMany
from domain.ledger import JobLedger
from infra import ledger_chain
from infra.errors import StoreUnavailable
from infra.events_table import EventsTable
from infra.settings import LedgerSettings, PostgresSettings
from infra.workers_store import PostgresWorkerStore
from projections.bulk_view import BulkJobView
from projections.job_view import PostgresJobView


def ledger_env(pg: PostgresSettings) -> dict[str, str]:
    """The eventsourcing configuration, passed explicitly to each application."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": pg.dbname,
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_SCHEMA": pg.schema_,
        "POSTGRES_POOL_SIZE": str(pg.pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pg.max_overflow),
        "POSTGRES_CONNECT_TIMEOUT": str(pg.connect_timeout_s),
        "POSTGRES_PRE_PING": "y",
        # Keep recently used jobs in memory; each get only reads their new events.
        "AGGREGATE_CACHE_MAXSIZE": "10000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        "CREATE_TABLE": "y",
        # The ledger's appends as one prepared call (infra/ledger_recorder.py).
        "APPLICATION_RECORDER_TOPIC": "infra.ledger_recorder:LedgerRecorder",
    }


# A pooled connection idle this long is pinged before it is handed out.
PING_IDLE_S = 1.0


class _PingWhenIdle:
    """The pool's check before it hands out a connection, made once per idle spell:
    a connection unused for ``idle_s`` is pinged (after a restart of PostgreSQL it
    is found dead and replaced before anyone uses it); one in steady use is not, since
    under load the ping was a round trip, and a tenth of a writer's CPU, for every
    transaction. A connection that breaks between its last use and the next fails
    that use, as one could fail between a ping and its use: the event store retries
    it, and a worker holds on (application/store.py)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.last_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        last = self.last_out.get(conn)
        if last is None or now - last >= self.idle_s:
            ConnectionPool.check_connection(conn)
        self.last_out[conn] = now


def _ping_when_idle(datastore: PostgresDatastore) -> None:
    pool: Any = datastore.pool
    assert pool._check is not None, "the pool was built without its pre-ping"
    pool._check = _PingWhenIdle(PING_IDLE_S)


# What a CREATE raises when another process created the same thing at the same moment.
CREATED_MEANWHILE = (
    psycopg.errors.DuplicateDatabase,
    psycopg.errors.DuplicateSchema,
    psycopg.errors.UniqueViolation,
)


def ensure_database(pg: PostgresSettings) -> None:
    """Create the database and the schema if they do not exist yet."""
    try:
        with psycopg.connect(_conninfo(pg, "postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (pg.dbname,)
            ).fetchone()
            if not exists:
                with contextlib.suppress(*CREATED_MEANWHILE):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg.dbname)))
        with (
            psycopg.connect(pg.conninfo, autocommit=True) as conn,
            contextlib.suppress(*CREATED_MEANWHILE),
        ):
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg.schema_))
            )
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(
            f"PostgreSQL at {pg.host}:{pg.port} is unreachable ({exc}). Start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        ) from exc


@contextlib.contextmanager
def schema_lock(pg: PostgresSettings) -> Iterator[psycopg.Connection[Any]]:
    """Serialise table creation across processes: PostgreSQL refuses concurrent
    CREATE OR REPLACE of the same function ("tuple concurrently updated"). Yields the
    connection that holds the lock, for DDL of the caller's own."""
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('jobledger.schema'))")
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('jobledger.schema'))")


def open_ledger(
    pg: PostgresSettings, options: LedgerSettings | None = None, *, fastforward: bool = True
) -> JobLedger:
    """The ledger. Group commit per ``options``. A process that alone writes the jobs
    it holds (a worker) may skip ``fastforward``: its cached copies are then used
    without a read, a copy that lost a race is dropped and read again, and the jobs
    it does read are read many to a query."""
    options = options or LedgerSettings()
    env = {
        **ledger_env(pg),
        "GROUP_COMMIT": "y" if options.group_commit else "n",
        "GROUP_COMMIT_MAX_BATCH": str(options.group_commit_max_batch),
        "GROUP_COMMIT_MAX_WAIT_S": str(options.group_commit_max_wait_s),
        "AGGREGATE_CACHE_FASTFORWARD": "y" if fastforward else "n",
    }
    with schema_lock(pg) as conn:
        ledger = JobLedger(env=env)
        ledger_chain.install(conn, pg.schema_, events_table_name(ledger))
    _ping_when_idle(ledger.recorder.datastore)  # type: ignore[attr-defined]
    if not fastforward:
        ledger.read_together(job_reader(ledger))
    return ledger


def events_table_name(ledger: JobLedger) -> str:
    recorder: Any = ledger.recorder
    return str(recorder.events_table_name)


def job_reader(ledger: JobLedger) -> ReadMany:
    """Reads the events of many jobs, oldest first, in one query."""
    return EventsTable(ledger).jobs


_small_stores: dict[tuple[str, str], PostgresDatastore] = {}
_small_stores_lock = threading.Lock()


def _datastore(pg: PostgresSettings) -> PostgresDatastore:
    """The connection pool of the small stores beside the ledger (the view, the
    followers' positions, the workers' heartbeats): one a process, however many of
    them it opens, keeping a single connection open and growing only under load."""
    key = (pg.conninfo, pg.schema_)
    with _small_stores_lock:  # the gateway, projector and dispatcher open theirs at once
        datastore = _small_stores.get(key)
        if datastore is None:
            env = {**ledger_env(pg), "POSTGRES_POOL_SIZE": "1"}
            factory = InfrastructureFactory.construct(Environment("stores", env))
            assert isinstance(factory, PostgresFactory)
            datastore = _small_stores[key] = factory.datastore
            _ping_when_idle(datastore)
        return datastore


def open_view(pg: PostgresSettings) -> PostgresJobView:
    view = PostgresJobView(_datastore(pg))
    with schema_lock(pg):
        view.create_table()
    return view


def open_rebuild(pg: PostgresSettings, *, restart: bool = False) -> BulkJobView:
    """The job view's rebuild beside the live one (``jobledger replay``); with
    ``restart``, emptied first."""
    view = BulkJobView(_datastore(pg))
    with schema_lock(pg):
        if restart:
            view.drop_tables()
        view.create_table()
    return view


def open_positions(pg: PostgresSettings, name: str) -> PostgresTrackingRecorder:
    """A follower's tracked position in the ledger (e.g. the dispatcher's)."""
    recorder = PostgresTrackingRecorder(_datastore(pg), tracking_table_name=f"{name}_tracking")
    with schema_lock(pg):
        recorder.create_table()
    return recorder


def open_workers(pg: PostgresSettings, heartbeat_ttl_s: float) -> PostgresWorkerStore:
    store = PostgresWorkerStore(_datastore(pg), heartbeat_ttl_s=heartbeat_ttl_s)
    with schema_lock(pg):
        store.create_tables()
    return store


def _conninfo(pg: PostgresSettings, dbname: str) -> str:
    return pg.model_copy(update={"dbname": dbname}).conninfo
