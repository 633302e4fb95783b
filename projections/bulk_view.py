"""The job view written in bulk, for a rebuild from the ledger (``jobledger replay``).

The same table, tracking and unprojectable tables as the live view, under names of its
own (``job_view_rebuild`` …), and the same changes (``JobProjection.changes``, merged per
job by ``merged``): only the statements differ. A batch's new rows go in by one
``COPY``, its updates by one ``UPDATE … FROM unnest(…)`` per set of columns changed,
then its tracking position, all in one transaction. The secondary indexes are
created after the bulk load (``create_indexes``), not maintained row by row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from projections.job_view import COLUMNS, PostgresJobView, merged
from projections.projection import ViewChange

REBUILD_TABLE = "job_view_rebuild"

# Each column's type, as the view's CREATE TABLE declares it (arrays of these carry
# a batch's updates).
TYPES = {
    "job_id": "uuid",
    "tenant": "text",
    "case_id": "text",
    "job_type": "text",
    "status": "text",
    "progress": "int4",
    "progress_message": "text",
    "attempt": "int4",
    "max_attempts": "int4",
    "priority": "text",
    "error": "text",
    "result": "jsonb",
    "correlation_id": "text",
    "cancel_requested": "bool",
    "submitted_by": "text",
    "submitted_at": "timestamptz",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "retry_at": "timestamptz",
    "updated_at": "timestamptz",
    "submitted_position": "int8",
    "position": "int8",
    "run_at": "timestamptz",
    "handed_over": "bool",
}
assert tuple(TYPES) == COLUMNS


class BulkJobView(PostgresJobView):
    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        view_table_name: str = REBUILD_TABLE,
        tracking_table_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            datastore,
            view_table_name=view_table_name,
            tracking_table_name=tracking_table_name or f"{view_table_name}_tracking",
            **kwargs,
        )
        self.view_table_name = view_table_name
        # Secondary indexes wait for the end of the load: ``create_indexes``.
        self.index_statements: list[Composed] = [
            s for s in self.sql_create_statements if b"CREATE INDEX" in s.as_bytes(None)
        ]
        self.sql_create_statements = [
            s for s in self.sql_create_statements if s not in self.index_statements
        ]
        self.tracking = Identifier(datastore.schema, self.tracking_table_name)
        self._copy = SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
            t=self.table, c=SQL(", ").join(map(Identifier, COLUMNS))
        )
        self._updates: dict[tuple[str, ...], bytes] = {}

    def create_indexes(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for statement in self.index_statements:
                curs.execute(statement)

    def drop_tables(self) -> None:
        """Start over: the rebuilt rows, their position and their unprojectable events."""
        with self.datastore.transaction(commit=True) as curs:
            for table in (self.table, self.skipped, self.tracking):
                curs.execute(SQL("DROP TABLE IF EXISTS {}").format(table))

    def apply(self, changes: Sequence[ViewChange], tracking: Tracking) -> None:
        """One transaction: the new rows by COPY, the updates by one statement per set
        of columns, the tracking position."""
        inserts: list[ViewChange] = []
        updates: dict[tuple[str, ...], list[ViewChange]] = {}
        for change in merged(changes):
            if change.insert:
                inserts.append(change)
            else:
                updates.setdefault(tuple(change.values), []).append(change)
        with self.datastore.transaction(commit=True) as curs:
            if inserts:
                self._insert(curs, inserts)
            for names, group in updates.items():
                self._update(curs, names, group)
            self._insert_tracking(curs, tracking)

    def _insert(self, curs: Cursor[Any], inserts: list[ViewChange]) -> None:
        with curs.copy(self._copy) as copy:
            copy.set_types([TYPES[c] for c in COLUMNS])
            write = copy.write_row
            for change in inserts:
                values = change.values
                result = values.get("result")
                write(
                    (
                        change.job_id,
                        values.get("tenant"),
                        values.get("case_id"),
                        values.get("job_type"),
                        values.get("status"),
                        values.get("progress"),
                        values.get("progress_message"),
                        values.get("attempt"),
                        values.get("max_attempts"),
                        values.get("priority"),
                        values.get("error"),
                        None if result is None else Jsonb(result),
                        values.get("correlation_id"),
                        values.get("cancel_requested"),
                        values.get("submitted_by"),
                        values.get("submitted_at"),
                        values.get("started_at"),
                        values.get("finished_at"),
                        values.get("retry_at"),
                        values.get("updated_at"),
                        values.get("submitted_position"),
                        values.get("position"),
                        values.get("run_at"),
                        values.get("handed_over"),
                    )
                )

    def _update(self, curs: Cursor[Any], names: tuple[str, ...], group: list[ViewChange]) -> None:
        statement = self._updates.get(names)
        if statement is None:
            statement = self._updates[names] = (
                SQL(
                    "UPDATE {t} AS t SET {s} FROM unnest({a}) AS u (job_id, {c}) "
                    "WHERE t.job_id = u.job_id"
                )
                .format(
                    t=self.table,
                    s=SQL(", ").join(SQL("{n} = u.{n}").format(n=Identifier(n)) for n in names),
                    a=SQL(", ").join(
                        SQL("%s::{}[]").format(SQL(TYPES[n])) for n in ("job_id", *names)
                    ),
                    c=SQL(", ").join(map(Identifier, names)),
                )
                .as_bytes(None)
            )
        columns: list[list[Any]] = [[c.job_id for c in group]]
        for name in names:
            if TYPES[name] == "jsonb":
                columns.append([_jsonb(c.values[name]) for c in group])
            else:
                columns.append([c.values[name] for c in group])
        curs.execute(statement, columns)


def _jsonb(value: Any) -> Any:
    return None if value is None else Jsonb(value)
