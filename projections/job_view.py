"""The job view in PostgreSQL: one row per job, updated in the same transaction as
the projection's tracking position, so each event is applied exactly once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.sql import SQL, Composed, Identifier, Placeholder
from psycopg.types.json import Jsonb

from projections.projection import JobRow, Page, TenantFilter, Unprojectable, ViewChange

if TYPE_CHECKING:
    from projections.figures import PoolFigures

COLUMNS = (
    "job_id",
    "tenant",
    "case_id",
    "job_type",
    "status",
    "progress",
    "progress_message",
    "attempt",
    "max_attempts",
    "priority",
    "error",
    "result",
    "correlation_id",
    "cancel_requested",
    "submitted_by",
    "submitted_at",
    "started_at",
    "finished_at",
    "retry_at",
    "updated_at",
    "submitted_position",
    "position",
    "run_at",
    "handed_over",
)


class PostgresJobView(PostgresTrackingRecorder):
    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        tracking_table_name: str = "job_view_tracking",
        view_table_name: str = "job_view",
        **kwargs: Any,
    ) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.table = Identifier(datastore.schema, view_table_name)
        self.names = (datastore.schema, view_table_name)
        self.skipped = Identifier(datastore.schema, f"{view_table_name}_unprojectable")
        self._statements: dict[tuple[bool, tuple[str, ...]], bytes] = {}
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {t} ("
                    "job_id uuid PRIMARY KEY, tenant text NOT NULL, case_id text NOT NULL, "
                    "job_type text NOT NULL, status text NOT NULL, progress int NOT NULL, "
                    "progress_message text NOT NULL, attempt int NOT NULL, "
                    "max_attempts int NOT NULL, error text, result jsonb, "
                    "correlation_id text NOT NULL, cancel_requested boolean NOT NULL, "
                    "submitted_by text NOT NULL, submitted_at timestamptz NOT NULL, "
                    "started_at timestamptz, finished_at timestamptz, retry_at timestamptz, "
                    "updated_at timestamptz NOT NULL, submitted_position bigint NOT NULL, "
                    "position bigint NOT NULL, run_at timestamptz, "
                    "handed_over boolean NOT NULL DEFAULT false)"
                ).format(t=self.table),
                # A view created before jobs could be delayed gets their columns in place.
                SQL(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS run_at timestamptz, "
                    "ADD COLUMN IF NOT EXISTS handed_over boolean NOT NULL DEFAULT false"
                ).format(t=self.table),
                # Added in place to a view created before priorities: the rows of
                # jobs submitted then are normal, as their upcast events say.
                SQL(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS priority text NOT NULL "
                    "DEFAULT 'normal'"
                ).format(t=self.table),
                SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} "
                    "(tenant, case_id, submitted_position DESC)"
                ).format(i=Identifier(f"{view_table_name}_case_idx"), t=self.table),
                # The tenant's listing across its cases (the dashboard), newest first;
                # created in place on a view that predates it.
                SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} (tenant, submitted_position DESC)"
                ).format(i=Identifier(f"{view_table_name}_tenant_submitted_idx"), t=self.table),
                # ... filtered by status (the failed jobs of a tenant of many).
                SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} "
                    "(tenant, status, submitted_position DESC)"
                ).format(i=Identifier(f"{view_table_name}_tenant_status_idx"), t=self.table),
                # The rows a tenant's jobs changed in a recent window (the dashboard's
                # figures of the last hour read only those).
                SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (tenant, updated_at)").format(
                    i=Identifier(f"{view_table_name}_tenant_updated_idx"), t=self.table
                ),
                SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (tenant, position)").format(
                    i=Identifier(f"{view_table_name}_tenant_position_idx"), t=self.table
                ),
                # A tenant's waiting jobs, for its quota: scheduled for later too (the
                # index before it left them out, and is dropped).
                SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} (tenant) "
                    "WHERE status IN ('scheduled', 'queued', 'retry_scheduled')"
                ).format(i=Identifier(f"{view_table_name}_waiting_all_idx"), t=self.table),
                SQL("DROP INDEX IF EXISTS {i}").format(
                    i=Identifier(datastore.schema, f"{view_table_name}_waiting_idx")
                ),
                SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} (run_at) "
                    "WHERE status = 'scheduled' AND NOT handed_over"
                ).format(i=Identifier(f"{view_table_name}_held_idx"), t=self.table),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {s} (position bigint PRIMARY KEY, "
                    "job_id uuid NOT NULL, event text NOT NULL, reason text NOT NULL, "
                    "recorded_at timestamptz NOT NULL DEFAULT now())"
                ).format(s=self.skipped),
            ]
        )

    def apply(self, changes: Sequence[ViewChange], tracking: Tracking) -> None:
        """One transaction, one statement per job changed (a job's changes within the
        batch are merged in order), pipelined: one round trip, not one each."""
        with self.datastore.transaction(commit=True) as curs, curs.connection.pipeline():
            for change in merged(changes):
                values = {k: _adapt(v) for k, v in change.values.items()}
                values["job_id"] = change.job_id
                key = (change.insert, tuple(values))
                statement = self._statements.get(key)
                if statement is None:
                    statement = self._statements[key] = self._statement(change, values)
                curs.execute(statement, values, prepare=True)
            self._insert_tracking(curs, tracking)

    def skip(self, unprojectable: Unprojectable, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {s} (position, job_id, event, reason) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (position) DO NOTHING"
                ).format(s=self.skipped),
                (
                    unprojectable.position,
                    unprojectable.job_id,
                    unprojectable.event,
                    unprojectable.reason,
                ),
            )
            self._insert_tracking(curs, tracking)

    def unprojectable(self) -> list[Unprojectable]:
        with self.datastore.cursor() as curs:
            curs.execute(
                SQL("SELECT position, job_id, event, reason FROM {s} ORDER BY position").format(
                    s=self.skipped
                )
            )
            return [Unprojectable(**row) for row in curs.fetchall()]

    def _statement(self, change: ViewChange, values: dict[str, Any]) -> bytes:
        return self._composed(change, values).as_bytes(None)

    def _composed(self, change: ViewChange, values: dict[str, Any]) -> Composed:
        names = list(values)
        if change.insert:
            return SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
                t=self.table,
                c=SQL(", ").join(map(Identifier, names)),
                v=SQL(", ").join(map(Placeholder, names)),
            )
        return SQL("UPDATE {t} SET {s} WHERE job_id = %(job_id)s").format(
            t=self.table,
            s=SQL(", ").join(
                SQL("{} = {}").format(Identifier(n), Placeholder(n)) for n in names if n != "job_id"
            ),
        )

    def count_waiting(self, tenant: str) -> int:
        with self.datastore.cursor() as curs:
            curs.execute(
                SQL(
                    "SELECT count(*) AS n FROM {t} WHERE tenant = %s "
                    "AND status IN ('scheduled', 'queued', 'retry_scheduled')"
                ).format(t=self.table),
                (tenant,),
            )
            row = curs.fetchone()
        return int(row["n"]) if row else 0

    def held_due(self, *, by: datetime, range_s: float, limit: int) -> list[UUID]:
        """Scheduled jobs held in the ledger at submission (``run_at`` more than
        ``range_s`` after it: domain.job.held_at_submission), not handed over, whose
        ``run_at`` is at or before ``by``; soonest first."""
        with self.datastore.cursor() as curs:
            curs.execute(
                SQL(
                    "SELECT job_id FROM {t} WHERE status = 'scheduled' AND NOT handed_over "
                    "AND run_at <= %s AND run_at - submitted_at > make_interval(secs => %s) "
                    "ORDER BY run_at LIMIT %s"
                ).format(t=self.table),
                (by, range_s, limit),
            )
            return [row["job_id"] for row in curs.fetchall()]

    def get(self, job_id: UUID) -> JobRow | None:
        with self.datastore.cursor() as curs:
            curs.execute(SQL("SELECT * FROM {t} WHERE job_id = %s").format(t=self.table), (job_id,))
            row = curs.fetchone()
        return None if row is None else JobRow(**row)

    def list_case(
        self,
        tenant: str,
        case_id: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Newest first; the cursor is the last row's submission position."""
        from projections import view_queries  # noqa: PLC0415 - see its docstring

        before = int(cursor) if cursor else None
        statement = view_queries.case_page(
            *self.names, status=status is not None, before=before is not None
        )
        params = {"tenant": tenant, "case_id": case_id, "limit": limit + 1}
        params.update({"status": status, "before": before})
        return self._page(statement, params, limit)

    def list_tenant(
        self, tenant: str, where: TenantFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Newest first across the tenant's cases; the cursor is the last row's
        submission position."""
        from projections import view_queries  # noqa: PLC0415 - see its docstring

        before = int(cursor) if cursor else None
        given = {
            "status": where.status,
            "job_type": where.job_type,
            "case_id": where.case_id,
            "since": where.since,
            "until": where.until,
            "before": before,
        }
        statement = view_queries.tenant_page(
            *self.names, **{k: v is not None for k, v in given.items()}
        )
        params: dict[str, Any] = {"tenant": tenant, "limit": limit + 1, **given}
        return self._page(statement, params, limit)

    def _page(self, statement: str, params: dict[str, Any], limit: int) -> Page:
        """Up to ``limit`` rows (the statement asks for one more, to know if there
        is a next page) and the cursor of the next page: the last row's position."""
        with self.datastore.cursor() as curs:
            curs.execute(statement.encode(), params)
            rows = [JobRow(**row) for row in curs.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, str(rows[-1].submitted_position) if more else None)

    def recent_figures(
        self, tenant: str, since: datetime, pools: Mapping[str, str]
    ) -> dict[str, PoolFigures]:
        """The tenant's figures per pool from ``since`` (an hour), see figures.py;
        ``pools`` maps each job type to its pool."""
        from projections import figures  # noqa: PLC0415 - only the gateway reads them

        counts, waits = figures.statements(self.table)
        params = figures.parameters(tenant, since, pools)
        with self.datastore.cursor() as curs:
            curs.execute(counts, params)
            counted = curs.fetchall()
            curs.execute(waits, params)
            waited = curs.fetchall()
        return figures.collect(counted, waited, pools)

    def case_submissions(
        self, tenant: str, case_id: str, *, by: datetime, before: int | None, limit: int
    ) -> list[tuple[UUID, int]]:
        """The jobs submitted to a case by a time, newest first, as (job id, submission
        position): facts of each ``Submitted`` event, which never change."""
        from projections import view_queries  # noqa: PLC0415 - see its docstring

        statement = view_queries.case_submissions(*self.names, before=before is not None)
        params = {"tenant": tenant, "case_id": case_id, "by": by, "before": before}
        with self.datastore.cursor() as curs:
            curs.execute(statement.encode(), {**params, "limit": limit})
            return [(row["job_id"], row["submitted_position"]) for row in curs.fetchall()]


def merged(changes: Sequence[ViewChange]) -> list[ViewChange]:
    """One change per job: its changes' values in order, an insert if the first was."""
    by_job: dict[UUID, ViewChange] = {}
    for change in changes:
        earlier = by_job.get(change.job_id)
        if earlier is None:
            by_job[change.job_id] = ViewChange(change.job_id, dict(change.values), change.insert)
        else:
            earlier.values.update(change.values)
    return list(by_job.values())


def _adapt(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value
