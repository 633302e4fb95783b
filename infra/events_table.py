"""The one reader of the ledger's events table: its queries and the decoding of its
rows. The followers (on their own asyncio connection), the streams' catch-up and a
worker's grouped reads (on the recorder's pool) all read through it."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg import sql

from domain.ledger import JobLedger

COLUMNS = "notification_id, originator_id, originator_version, topic, state"
# (event or None, position): None for an event the reader did not ask to decode.
Positioned = tuple[Any, int]


class EventsTable:
    def __init__(self, ledger: JobLedger, view_table: sql.Identifier | None = None) -> None:
        recorder: Any = ledger.recorder
        self.recorder = recorder
        self.to_event = ledger.mapper.to_domain_event
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)

        view = view_table or sql.Identifier(recorder.datastore.schema, "job_view")

        def statement(text: str) -> bytes:
            return (
                sql.SQL(text)
                .format(table=table, columns=sql.SQL(COLUMNS), view=view)
                .as_bytes(None)
            )

        # Every event after a position, in ledger order.
        self.after = statement(
            "SELECT {columns} FROM {table} WHERE notification_id > %s "
            "ORDER BY notification_id LIMIT %s"
        )
        # The last position after a given one (None: nothing after it).
        self.head_after = statement(
            "SELECT max(notification_id) FROM {table} WHERE notification_id > %s"
        )
        # One job's events after a position (the primary key's first column).
        self.of_job_after = statement(
            "SELECT {columns} FROM {table} WHERE originator_id = %s AND notification_id > %s "
            "ORDER BY notification_id LIMIT %s"
        )
        # A tenant's (or a case's) events after a position and up to another, found
        # through the job view: the jobs the view saw change after the position (its
        # (tenant, position) index), then their events by id. Cost follows the
        # tenant's own events, not the ledger's. Only up to the view's own position.
        self.of_tenant_between = statement(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state "
            "FROM (SELECT job_id FROM {view} WHERE tenant = %(tenant)s "
            "AND position > %(after)s "
            "AND (%(case_id)s::text IS NULL OR case_id = %(case_id)s)) AS j "
            "CROSS JOIN LATERAL (SELECT {columns} FROM {table} "
            "WHERE originator_id = j.job_id AND notification_id > %(after)s "
            "AND notification_id <= %(until)s) AS e "
            "ORDER BY e.notification_id LIMIT %(limit)s"
        )
        # Every event after a position and up to another, in ledger order.
        self.after_until = statement(
            "SELECT {columns} FROM {table} WHERE notification_id > %s "
            "AND notification_id <= %s ORDER BY notification_id LIMIT %s"
        )
        # Many jobs' events, each job's oldest first.
        self.of_jobs = statement(
            "SELECT {columns} FROM {table} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version"
        )

    def decoded(
        self, rows: Iterable[Sequence[Any]], topics: Collection[str] | None = None
    ) -> list[Positioned]:
        """Rows of ``COLUMNS`` as (event, position); with ``topics``, the others as
        (None, position)."""
        return [
            (
                self.to_event(StoredEvent(originator_id, version, topic, bytes(state)))
                if topics is None or topic in topics
                else None,
                notification_id,
            )
            for notification_id, originator_id, version, topic, state in rows
        ]

    def read(self, statement: bytes, params: Sequence[Any] | Mapping[str, Any]) -> list[Positioned]:
        """Run one of the statements above on the recorder's pool (blocking)."""
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, params, prepare=True)
            rows = cursor.fetchall()
        return self.decoded(tuple(row.values()) if isinstance(row, dict) else row for row in rows)

    def jobs(self, job_ids: Sequence[UUID]) -> dict[UUID, list[Any]]:
        """Each found job's events, oldest first, in one query."""
        found: dict[UUID, list[Any]] = {}
        for event, _ in self.read(self.of_jobs, (list(job_ids),)):
            found.setdefault(event.originator_id, []).append(event)
        return found

    def head(self) -> int:
        """The ledger's last position (0 when it is empty)."""
        return int(self.recorder.max_notification_id() or 0)
