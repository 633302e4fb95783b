"""What it costs to resume a tenant's live feed far back: through the job view's
(tenant, position) index, against the scan of every tenant's events it replaced.

    .venv/bin/python -m bench.stream_resume --others 100000 --own 100

Fills a fresh schema with ``--others`` events of other tenants and ``--own`` of one
tenant, projects them, then resumes that tenant's feed from position 0 both ways and
prints wall time and the process's CPU time for each (PostgreSQL's own time shows in
the wall time)."""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg
from eventsourcing.persistence import Tracking

from domain.job import Job
from domain.origin import Origin
from gateway.stream import Feed
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from infra.streams import PostgresLedgerHistory
from projections.projection import JobProjection

ORIGIN = Origin("bench")


def fill(ledger: object, tenant: str, events: int) -> None:
    jobs = []
    for _ in range(events // 3):
        job = Job.submit(
            job_id=uuid.uuid4(),
            tenant=tenant,
            case_id="c",
            job_type="echo",
            params={},
            pool="default",
            max_attempts=1,
            origin=ORIGIN,
        )
        job.start(1, "w", ORIGIN)
        job.succeed({}, ORIGIN)
        jobs.append(job)
        if len(jobs) == 500:
            ledger.save(*jobs)  # type: ignore[attr-defined]
            jobs = []
    if jobs:
        ledger.save(*jobs)  # type: ignore[attr-defined]


def resume(history: PostgresLedgerHistory, feed: Feed, *, scan: bool) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    position, more, events = 0, True, 0
    while more:
        if scan:
            rows = history.table.read(history.table.after, (position, 500))
            events += sum(getattr(e, "tenant", "") == feed.tenant for e, _ in rows)
            position, more = (rows[-1][1] if rows else position), len(rows) == 500
        else:
            page = history.after(feed, position, 500)
            events += len(page.events)
            position, more = page.scanned_to, page.more
    return events, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--others", type=int, default=100_000)
    parser.add_argument("--own", type=int, default=100)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pg = PostgresSettings(schema=schema)
    ledger_store.ensure_database(pg)
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    view = ledger_store.open_view(pg)
    try:
        fill(ledger, "others", args.others // 2)
        fill(ledger, "mine", args.own)
        fill(ledger, "others", args.others // 2)
        projection = JobProjection()
        position = 0
        while batch := list(ledger.recorder.select_notifications(start=position + 1, limit=500)):
            changes = [
                c for n in batch for c in projection.changes(ledger.mapper.to_domain_event(n), n.id)
            ]
            view.apply(changes, Tracking(ledger.name, batch[-1].id))
            position = batch[-1].id
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=jobledger", autocommit=True) as c:
            # As autovacuum would have by now on a ledger this size: fresh statistics.
            c.execute(f"ANALYZE {schema}.job_view")
            c.execute(f"ANALYZE {schema}.jobledger_events")
        history = PostgresLedgerHistory(ledger, view)
        feed = Feed("mine")
        print(f"ledger: {position} events; the tenant's: {args.own // 3 * 3}")
        for name, scan in (("scan of every tenant's events", True), ("through the view", False)):
            events, wall, cpu = resume(history, feed, scan=scan)
            print(
                f"  {name:<32} {events:>6} events  {wall * 1e3:8.1f} ms wall  {cpu * 1e3:8.1f} ms CPU"
            )
    finally:
        ledger.close()
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=jobledger", autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
