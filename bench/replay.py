"""The rate of ``jobledger replay``: a full rebuild of the job view from the first
event of a ledger of N events.

    .venv/bin/python -m bench.replay -n 1000000

The ledger lives in a schema of its own (``--schema``, kept between runs): if it
holds fewer than N events, jobs are appended until it does, each with a history as
workers leave it (Submitted, Started, ProgressReported, then Succeeded, or
AttemptFailed and Failed for one job in ten), the jobs' events interleaved across
positions as a busy system's are. Then ``jobledger replay --restart`` rebuilds the
view from position 0 in a process of its own; prints its events/s and peak RSS.
``--verify`` also times ``jobledger replay --verify`` against the live view (built
first by the live projector, ``jobledger projector``, if it is behind the ledger: its
time is printed too)."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.ledger_appends import job
from domain.job import Job
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings

ROOT = Path(__file__).resolve().parents[1]
WORKER = Origin(actor="vm:1:default:bench")
ROUND = 500  # jobs a transaction


def events_in(pg: PostgresSettings) -> int:
    with psycopg.connect(pg.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (pg.schema_, "jobledger_events"),
        ).fetchone()
        if not row or not row[0]:
            return 0
        found = conn.execute(f'SELECT count(*) FROM "{pg.schema_}".jobledger_events').fetchone()
        return int(found[0]) if found else 0


def generate(pg: PostgresSettings, target: int) -> None:
    """Append jobs until the ledger holds ``target`` events: each round submits
    ``ROUND`` jobs, starts the previous round's and finishes the one before, so a
    job's events are spread over three transactions."""
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    try:
        have = events_in(pg)
        began, n = time.monotonic(), 0
        submitted: list[Job] = []
        started: list[Job] = []
        while have < target or submitted or started:
            if have < target:
                fresh = [Job.submit(**job(n + i)) for i in range(ROUND)]  # type: ignore[arg-type]
                n += ROUND
                ledger.save(*fresh)
                have += ROUND
            else:
                fresh = []
            for j in submitted:
                j.start(1, WORKER.actor, WORKER, delivery_id=uuid.uuid4().hex[:16])
                j.report_progress(50, "halfway", WORKER)
            if submitted:
                ledger.save(*submitted)
                have += 2 * len(submitted)
            for i, j in enumerate(started):
                if i % 10 == 0:
                    j.fail_attempt(
                        "RuntimeError: bench", retry_at=None, retryable=False, origin=WORKER
                    )
                    have += 2
                else:
                    j.succeed({"n": i}, WORKER)
                    have += 1
            if started:
                ledger.save(*started)
            started, submitted = submitted, fresh
            if n % 50_000 == 0:
                rate = have / max(time.monotonic() - began, 1e-9)
                print(f"  {have:,} events ({rate:,.0f}/s)", file=sys.stderr)
    finally:
        ledger.close()


def timed(env: dict[str, str], *args: str) -> tuple[float, int, str]:
    """Run ``jobledger ARGS``: (seconds, exit code, its last output line)."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "--log-level", "warning", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - began
    lines = (done.stdout + done.stderr).strip().splitlines()
    return seconds, done.returncode, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="events in the ledger")
    parser.add_argument("--schema", default="bench_replay")
    parser.add_argument("--batch", type=int, default=None, help="jobledger replay --batch")
    parser.add_argument("--verify", action="store_true", help="also time replay --verify")
    args = parser.parse_args()
    pg = PostgresSettings(dbname="jobledger", schema=args.schema)
    ledger_store.ensure_database(pg)
    if events_in(pg) < args.n:
        print(f"appending events to {args.schema} until it holds {args.n:,}", file=sys.stderr)
        generate(pg, args.n)
    total = events_in(pg)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JOBLEDGER_")},
        "JOBLEDGER_POSTGRES__DBNAME": "jobledger",
        "JOBLEDGER_POSTGRES__SCHEMA": args.schema,
        "PYTHONPATH": str(ROOT),
    }
    batch = ["--batch", str(args.batch)] if args.batch else []
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {total:,} events in {args.schema}")
    seconds, code, last = timed(env, "replay", "--restart", "--quiet", *batch)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    print(f"rebuild: {seconds:.1f} s, {total / seconds:,.0f} events/s (wall, process start")
    print(f"  included), exit {code}, peak RSS {usage.ru_maxrss / 1024:.0f} MB, its CPU")
    print(f"  {cpu:.1f} s ({total / cpu:,.0f} events per CPU second); it said: {last}")
    if args.verify:
        live = live_position(pg)
        if live < head(pg):
            began = time.perf_counter()
            projector = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "--log-level", "warning", "projector"],
                cwd=ROOT,
                env=env,
            )
            try:
                while live_position(pg) < head(pg):
                    time.sleep(0.5)
            finally:
                projector.send_signal(signal.SIGTERM)
                projector.wait()
            seconds = time.perf_counter() - began
            print(
                f"live projector (for comparison): {head(pg) - live:,} events in {seconds:.1f} s, "
                f"{(head(pg) - live) / seconds:,.0f} events/s"
            )
        seconds, code, last = timed(env, "replay", "--verify", "--quiet", *batch)
        print(f"replay --verify (rebuild already at the head): {seconds:.1f} s, exit {code}")
        print(f"  it said: {last}")


def head(pg: PostgresSettings) -> int:
    with psycopg.connect(pg.conninfo) as conn:
        row = conn.execute(
            f'SELECT max(notification_id) FROM "{pg.schema_}".jobledger_events'
        ).fetchone()
    return int(row[0]) if row and row[0] else 0


def live_position(pg: PostgresSettings) -> int:
    with psycopg.connect(pg.conninfo) as conn:
        try:
            row = conn.execute(
                f'SELECT notification_id FROM "{pg.schema_}".job_view_tracking '
                "WHERE application_name = 'JobLedger'"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row and row[0] else 0


if __name__ == "__main__":
    main()
