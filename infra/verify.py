"""``jobledger verify``: what a person runs after an incident. Reads the whole ledger,
one job at a time, and checks that

- every job's history is a path of the state machine, each attempt ended at most once
  (domain/history.py, through the same ``status_after`` fold the aggregate uses);
- the job view equals the ledger replayed: a row per job, each field as the job's;
- no view row names a job the ledger does not hold;

- every event's hash matches its content and links to its predecessor's (the hash
  chain, infra/ledger_chain.py): an edited, deleted or reordered event is named;
- given a head printed earlier (``--head POSITION:HASH``), the ledger up to that
  position still folds to it;

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
from domain.schedule import is_schedule_event
from infra import ledger_chain
from infra.ledger_chain import Head
from projections.job_view import COLUMNS, PostgresJobView
from projections.projection import JobRow, differences

SHOWN = 20  # offending jobs listed per kind


@dataclass
class Report:
    jobs: int = 0
    schedules: int = 0
    events: int = 0
    invalid: dict[UUID, list[str]] = field(default_factory=dict)
    mismatched: dict[UUID, list[str]] = field(default_factory=dict)
    orphans: list[UUID] = field(default_factory=list)
    tampered: dict[UUID, list[str]] = field(default_factory=dict)
    unchained: int = 0  # events recorded before the chain began
    head: Head | None = None
    head_expected: tuple[int, bytes] | None = None
    unprojectable: int = 0

    @property
    def head_differs(self) -> bool:
        return self.head_expected is not None and (
            self.head is None or self.head_expected[1] != self.head.value
        )

    @property
    def passed(self) -> bool:
        return not (
            self.invalid or self.mismatched or self.orphans or self.tampered or self.head_differs
        )

    def print(self, out: TextIO) -> None:
        rows = [
            ("jobs", self.jobs),
            ("schedules", self.schedules),
            ("events", self.events),
            ("invalid histories", len(self.invalid)),
            ("view rows != replay", len(self.mismatched)),
            ("view rows of no job", len(self.orphans)),
            ("jobs whose hash chain is broken", len(self.tampered)),
            ("events before the chain began", self.unchained),
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
        for job_id, found in itertools.islice(self.tampered.items(), SHOWN):
            print(f"hash chain of {job_id} broken: {'; '.join(found)}", file=out)
        if self.head is not None:
            print(f"head {self.head} ({self.head.events} chained events)", file=out)
        if self.head_expected is not None and self.head_differs:
            position, was = self.head_expected
            print(
                f"head at position {position} was {was.hex()}; the ledger now folds to "
                f"{self.head.value.hex() if self.head else 'nothing'}: events up to it were "
                "changed, deleted or rewritten",
                file=out,
            )
        print("verify: " + ("passed" if self.passed else "FAILED"), file=out)


def verify(
    ledger: JobLedger,
    view: PostgresJobView,
    conninfo: str,
    *,
    head: tuple[int, bytes] | None = None,
) -> Report:
    """``head``: a head printed earlier (position, value) that the ledger must still
    fold to up to that position."""
    set_aside = view.unprojectable()
    report = Report(unprojectable=len(set_aside), head_expected=head)
    skipped = {u.job_id for u in set_aside}
    recorder: Any = ledger.recorder
    schema, table = recorder.datastore.schema, recorder.events_table_name
    with psycopg.connect(conninfo) as conn:
        chain_since = ledger_chain.since(conn, schema)
        histories = _histories(conn, sql.Identifier(schema, table), ledger)
        rows = _rows(conn, view)
        row = next(rows, None)
        for job_id, history, stored in histories:
            while row is not None and row.job_id < job_id:
                report.orphans.append(row.job_id)
                row = next(rows, None)
            mine = row if row is not None and row.job_id == job_id else None
            if mine is not None:
                row = next(rows, None)
            report.events += len(history)
            report.unchained += sum(1 for r in stored if r.hash is None)
            broken = chain_breaks(job_id, stored, chain_since)
            if broken:
                report.tampered[job_id] = broken
            if history and is_schedule_event(history[0]):
                report.schedules += 1  # chained as jobs are; no state machine or view row
                continue
            report.jobs += 1
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
        report.head = ledger_chain.read_head(conn, schema, table, head[0] if head else None)
    return report


@dataclass(frozen=True)
class StoredRow:
    version: int
    position: int
    topic: str
    state: bytes
    prev_hash: bytes | None
    hash: bytes | None


def chain_breaks(job_id: UUID, rows: list[StoredRow], chain_since: int | None) -> list[str]:
    """What breaks one job's hash chain, event by event (oldest first)."""
    found: list[str] = []
    expected_prev, expected_version = ledger_chain.GENESIS, 1
    for row in rows:
        if row.version != expected_version:
            found.append(f"version {expected_version} to {row.version - 1} deleted")
        if row.hash is None:
            if chain_since is not None and row.position > chain_since:
                found.append(f"version {row.version} has no hash (its hash was removed)")
            expected_prev = ledger_chain.GENESIS
        else:
            prev = row.prev_hash or b""
            if prev != expected_prev and row.version == expected_version:
                found.append(
                    f"version {row.version} does not follow version {row.version - 1} "
                    "(an event before it was deleted, replaced or moved)"
                )
            if (
                ledger_chain.event_hash(
                    prev, job_id, row.version, row.position, row.topic, row.state
                )
                != row.hash
            ):
                found.append(f"version {row.version} was edited: it does not match its hash")
            expected_prev = row.hash
        expected_version = row.version + 1
    return found


def _histories(
    conn: psycopg.Connection[Any], table: sql.Identifier, ledger: JobLedger
) -> Iterator[tuple[UUID, list[Any], list[StoredRow]]]:
    """Each job's events, oldest first, job after job (by id), with their rows."""
    to_event = ledger.mapper.to_domain_event
    with conn.cursor(name="verify_events") as cursor:
        cursor.itersize = 2000
        cursor.execute(
            sql.SQL(
                "SELECT originator_id, originator_version, notification_id, topic, state, "
                "prev_hash, hash FROM {} ORDER BY originator_id, originator_version"
            ).format(table)
        )
        for job_id, rows in itertools.groupby(cursor, key=lambda r: r[0]):
            stored = [
                StoredRow(
                    version,
                    position,
                    topic,
                    bytes(state),
                    None if prev is None else bytes(prev),
                    None if hash_ is None else bytes(hash_),
                )
                for _, version, position, topic, state, prev, hash_ in rows
            ]
            events = [to_event(StoredEvent(job_id, r.version, r.topic, r.state)) for r in stored]
            yield job_id, events, stored


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
