"""Where the ledger's schedules are: a partial index of the events table on the
``Schedule.Created`` rows, so finding every schedule reads those rows alone, however
long the ledger. A job's append only evaluates the index's predicate."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import sql

from domain.ledger import JobLedger
from domain.schedule import Schedule
from infra import ledger_store
from infra.settings import PostgresSettings

CREATED = get_topic(Schedule.Created)


class PostgresScheduleIndex:
    def __init__(self, ledger: JobLedger) -> None:
        recorder: Any = ledger.recorder
        self.datastore = recorder.datastore
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
        # The topic as a literal, so the planner matches it to the index's predicate.
        self.select = (
            sql.SQL("SELECT originator_id FROM {} WHERE topic = {} ORDER BY originator_id")
            .format(table, sql.Literal(CREATED))
            .as_bytes(None)
        )

    def ids(self) -> list[UUID]:
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(self.select)
            return [_value(row) for row in cursor.fetchall()]


def _value(row: Any) -> UUID:
    value = row["originator_id"] if isinstance(row, dict) else row[0]
    return value if isinstance(value, UUID) else UUID(str(value))


def open_schedule_index(pg: PostgresSettings, ledger: JobLedger) -> PostgresScheduleIndex:
    recorder: Any = ledger.recorder
    name = str(recorder.events_table_name)
    with ledger_store.schema_lock(pg) as conn:
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (originator_id) WHERE topic = {}").format(
                sql.Identifier(f"{name}_schedules"),
                sql.Identifier(pg.schema_, name),
                sql.Literal(CREATED),
            )
        )
    return PostgresScheduleIndex(ledger)
