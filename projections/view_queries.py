"""The job view's filtered reads, composed with SQLAlchemy Core: the table is defined
once, and each statement is built from the filters a request actually gives (an
absent filter is absent from the SQL, rather than ``%(x)s IS NULL OR …``, so each
shape gets a plan of its own). A shape is compiled once, for the psycopg dialect,
and cached; it runs on the view's own psycopg connections, so there is one database
driver. Imported on first use: a worker, which opens no view, never loads it (the
gateway imports it in a thread once it listens)."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def job_view(schema: str, name: str) -> sa.Table:
    """The view's table, as created by PostgresJobView."""
    return sa.Table(
        name,
        sa.MetaData(schema=schema),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("job_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("progress_message", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("priority", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("result", postgresql.JSONB),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("submitted_by", sa.Text, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("retry_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_position", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True)),
        sa.Column("handed_over", sa.Boolean, nullable=False),
    )


def _compiled(statement: sa.Select[tuple[object, ...]]) -> str:
    """SQL for psycopg, its parameters named ``%(name)s`` as the statement's binds."""
    return str(statement.compile(dialect=_DIALECT))


@functools.cache
def case_page(schema: str, name: str, *, status: bool, before: bool) -> str:
    """A case's jobs, newest first: binds ``tenant``, ``case_id``, ``limit`` and, when
    filtered on, ``status`` and ``before`` (a submission position)."""
    t = job_view(schema, name)
    statement = sa.select(t).where(
        t.c.tenant == sa.bindparam("tenant"), t.c.case_id == sa.bindparam("case_id")
    )
    if status:
        statement = statement.where(t.c.status == sa.bindparam("status"))
    if before:
        statement = statement.where(t.c.submitted_position < sa.bindparam("before"))
    return _compiled(statement.order_by(t.c.submitted_position.desc()).limit(sa.bindparam("limit")))


@functools.cache
def case_submissions(schema: str, name: str, *, before: bool) -> str:
    """The jobs submitted to a case by a time (``by``), newest first, as (job_id,
    submitted_position): binds ``tenant``, ``case_id``, ``by``, ``limit`` and, when
    paging, ``before``."""
    t = job_view(schema, name)
    statement = sa.select(t.c.job_id, t.c.submitted_position).where(
        t.c.tenant == sa.bindparam("tenant"),
        t.c.case_id == sa.bindparam("case_id"),
        t.c.submitted_at <= sa.bindparam("by", type_=sa.DateTime(timezone=True)),
    )
    if before:
        statement = statement.where(t.c.submitted_position < sa.bindparam("before"))
    return _compiled(statement.order_by(t.c.submitted_position.desc()).limit(sa.bindparam("limit")))


@functools.cache
def tenant_page(
    schema: str,
    name: str,
    *,
    status: bool,
    job_type: bool,
    case_id: bool,
    since: bool,
    until: bool,
    before: bool,
) -> str:
    """A tenant's jobs across its cases, newest first (the index on tenant and
    submission position): binds ``tenant``, ``limit`` and each filter given."""
    t = job_view(schema, name)
    statement = sa.select(t).where(t.c.tenant == sa.bindparam("tenant"))
    for given, column in (
        (status, t.c.status),
        (job_type, t.c.job_type),
        (case_id, t.c.case_id),
    ):
        if given:
            statement = statement.where(column == sa.bindparam(column.name))
    when = sa.DateTime(timezone=True)
    if since:
        statement = statement.where(t.c.submitted_at >= sa.bindparam("since", type_=when))
    if until:
        statement = statement.where(t.c.submitted_at <= sa.bindparam("until", type_=when))
    if before:
        statement = statement.where(t.c.submitted_position < sa.bindparam("before"))
    return _compiled(statement.order_by(t.c.submitted_position.desc()).limit(sa.bindparam("limit")))
