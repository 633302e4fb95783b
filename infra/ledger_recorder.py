"""The ledger's appends, one prepared call each.

The event store's own append is a pipelined transaction of six statements: BEGIN,
the lock timeout, ``LOCK TABLE … IN EXCLUSIVE MODE``, ``NOTIFY``, the INSERT of an
array of composite values, COMMIT; psycopg composes and converts the lock and the
NOTIFY each time, and dumps the composites in Python. Here the same work is one
function on the server, called as one prepared statement in autocommit with four
plain arrays (ids, versions, topics, states). What it does is unchanged: the whole
append is one transaction, holds the table lock until it commits (so positions are
committed in order, and the hash chain's trigger finds each event's predecessor),
and notifies the followers at commit. A unique violation (a concurrent write of the
same version) is raised as before, so the ledger's conflict handling is the same.

An append that carries an event calling for a message (``DISPATCHED_TOPICS``) also
notifies a second channel, ``dispatch_channel``: the dispatcher waits on that one, so
the commits of a job's start and end (two of its three) do not wake it. It still reads
every event after its position when it wakes, in order, so it applies what the others
carried before it uses it.

Both channels carry the schema's name: ledgers in two schemas of one database notify
channels of their own."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier, Literal

from application.outbox import DISPATCHED_TOPICS


class LedgerRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        # Channels belong to the database, tables to a schema: named after the table
        # alone, the commits of a ledger in another schema would wake these followers.
        self.channel_name = f"{datastore.schema}_{events_table_name}"
        self.dispatch_channel = f"{self.channel_name}_dispatch"
        schema = Identifier(datastore.schema)
        function = Identifier(f"{events_table_name}_append")
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $$ "
                "BEGIN "
                "  SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "  LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "  NOTIFY {channel}; "
                "  IF topics && ARRAY[{dispatched}]::text[] THEN "
                "    NOTIFY {dispatch_channel}; "
                "  END IF; "
                "  RETURN QUERY INSERT INTO {schema}.{table} "
                "    (originator_id, originator_version, topic, state) "
                "    SELECT * FROM unnest(ids, versions, topics, states) "
                "    RETURNING notification_id; "
                "END $$"
            ).format(
                schema=schema,
                function=function,
                id_type=Identifier(datastore.originator_id_type),
                lock_timeout=datastore.lock_timeout,
                table=Identifier(events_table_name),
                channel=Identifier(self.channel_name),
                dispatched=SQL(", ").join(Literal(t) for t in sorted(DISPATCHED_TOPICS)),
                dispatch_channel=Identifier(self.dispatch_channel),
            )
        )
        self.append_statement = SQL(
            "SELECT position FROM {schema}.{function}("
            "%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) AS position"
        ).format(schema=schema, function=function, id_type=Identifier(datastore.originator_id_type))

    def channel_for(self, topics: Collection[str] | None) -> str:
        """The channel notified by every commit that carries any of ``topics`` (None:
        by every commit), and by as few others as can be."""
        if topics is not None and set(topics) <= DISPATCHED_TOPICS:
            return self.dispatch_channel
        return self.channel_name

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        params = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        with self.datastore.get_connection() as conn:
            rows = conn.execute(self.append_statement, params, prepare=True).fetchall()
        return [row["position"] for row in rows]
