"""``jobledger verify``: what a person runs after an incident. Reads the whole ledger,
one job at a time, and checks that

- every job's history is a path of the state machine, each attempt ended at most once
  (domain/history.py, through the same ``status_after`` fold the aggregate uses);
- the job view equals the ledger replayed: a row per job, each field as the job's;
- no view row names a job the ledger does not hold;

and reports the events the view set aside as unprojectable. The events are read in
the order of the table's primary key (job, version) with a server-side cursor, and the
view's rows in job order beside them, so memory stays flat however long the ledger."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql
from psycopg.rows import dict_row

from domain.history import problems
from domain.job import Job
from domain.ledger import JobLedger
from projections.job_view import COLUMNS, PostgresJobView
from projections.projection import JobRow, differences

SHOWN = 20  # offending jobs listed per kind


@dataclass
class Report:
    jobs: int = 0
    events: int = 0
    invalid: dict[UUID, list[str]] = field(default_factory=dict)
    mismatched: dict[UUID, list[str]] = field(default_factory=dict)
    orphans: list[UUID] = field(default_factory=list)
    unprojectable: int = 0

    @property
    def passed(self) -> bool:
        return not (self.invalid or self.mismatched or self.orphans)

    def print(self, out: TextIO) -> None:
        rows = [
            ("jobs", self.jobs),
            ("events", self.events),
            ("invalid histories", len(self.invalid)),
            ("view rows != replay", len(self.mismatched)),
            ("view rows of no job", len(self.orphans)),
            ("unprojectable events (set aside)", self.unprojectable),
        ]
        for name, value in rows:
            print(f"  {name:<34} {value:>9}", file=out)
        for job_id, found in itertools.islice(self.invalid.items(), SHOWN):
            print(f"invalid history of {job_id}: {'; '.join(found)}", file=out)
        for job_id, fields in itertools.islice(self.mismatched.items(), SHOWN):
            print(f"view of {job_id} differs from the ledger in: {', '.join(fields)}", file=out)
        for job_id in self.orphans[:SHOWN]:
            print(f"view row of {job_id}: no such job in the ledger", file=out)
        print("verify: " + ("passed" if self.passed else "FAILED"), file=out)


def verify(ledger: JobLedger, view: PostgresJobView, conninfo: str) -> Report:
    report = Report(unprojectable=len(view.unprojectable()))
    skipped = {u.job_id for u in view.unprojectable()}
    recorder: Any = ledger.recorder
    events_table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    with psycopg.connect(conninfo) as conn:
        histories = _histories(conn, events_table, ledger)
        rows = _rows(conn, view)
        row = next(rows, None)
        for job_id, history in histories:
            while row is not None and row.job_id < job_id:
                report.orphans.append(row.job_id)
                row = next(rows, None)
            mine = row if row is not None and row.job_id == job_id else None
            if mine is not None:
                row = next(rows, None)
            report.jobs += 1
            report.events += len(history)
            found = problems(history)
            if found:
                report.invalid[job_id] = found
            job = _replayed(history)
            if job is not None and job_id not in skipped:
                differ = differences(mine, job)
                if differ:
                    report.mismatched[job_id] = differ
        while row is not None:
            report.orphans.append(row.job_id)
            row = next(rows, None)
    return report


def _histories(
    conn: psycopg.Connection[Any], table: sql.Identifier, ledger: JobLedger
) -> Iterator[tuple[UUID, list[Any]]]:
    """Each job's events, oldest first, job after job (by id)."""
    to_event = ledger.mapper.to_domain_event
    with conn.cursor(name="verify_events") as cursor:
        cursor.itersize = 2000
        cursor.execute(
            sql.SQL(
                "SELECT originator_id, originator_version, topic, state FROM {} "
                "ORDER BY originator_id, originator_version"
            ).format(table)
        )
        rows = (
            to_event(StoredEvent(originator_id, version, topic, bytes(state)))
            for originator_id, version, topic, state in cursor
        )
        for job_id, events in itertools.groupby(rows, key=lambda e: e.originator_id):
            yield job_id, list(events)


def _rows(conn: psycopg.Connection[Any], view: PostgresJobView) -> Iterator[JobRow]:
    with conn.cursor(name="verify_view", row_factory=dict_row) as cursor:
        cursor.itersize = 2000
        cursor.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY job_id").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), view.table
            )
        )
        for row in cursor:
            yield JobRow(**row)


def _replayed(history: list[Any]) -> Job | None:
    job: Any = None
    try:
        for event in history:
            job = event.mutate(job)
    except Exception:  # noqa: BLE001 - an unreplayable history is reported as invalid
        return None
    return job if isinstance(job, Job) else None
