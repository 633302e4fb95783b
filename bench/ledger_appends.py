"""Ledger append rate: how many job events per second the ledger takes.

Three ways of writing the same Submitted events into a fresh schema, with nothing else
running:

    naive        one ``save`` per job, one caller: the rate of a ledger without batching
    group commit C callers (threads, as HTTP requests and worker outcomes are) each
                 submitting one job at a time through ``JobLedger.submit_job``; the
                 process's one writer batches what they hand it
    batch        ``save`` of 500 jobs at once: the ceiling group commit aims at

    .venv/bin/python -m bench.ledger_appends -n 20000 --callers 64
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import psycopg

from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings

ORIGIN = Origin(actor="bench")


def job(i: int) -> dict[str, object]:
    return {
        "job_id": uuid.uuid4(),
        "tenant": "dev",
        "case_id": f"bench-{i % 50}",
        "job_type": "noop",
        "params": {"n": i},
        "pool": "default",
        "max_attempts": 3,
        "origin": ORIGIN,
    }


def naive(ledger: JobLedger, n: int) -> float:
    started = time.monotonic()
    for i in range(n):
        ledger.save(Job.submit(**job(i)))  # type: ignore[arg-type]
    return n / (time.monotonic() - started)


def group_commit(ledger: JobLedger, n: int, callers: int) -> float:
    numbers = iter(range(n))
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            ledger.submit_job(**job(i))  # type: ignore[arg-type]

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.monotonic() - started)


def batch(ledger: JobLedger, n: int, size: int = 500) -> float:
    started = time.monotonic()
    for first in range(0, n, size):
        ledger.save(*(Job.submit(**job(i)) for i in range(first, min(first + size, n))))  # type: ignore[arg-type]
    return n / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--jobs", type=int, default=20000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--naive-jobs", type=int, default=2000)
    parser.add_argument(
        "--max-wait-s", type=float, default=LedgerSettings().group_commit_max_wait_s
    )
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pg = PostgresSettings(dbname="jobledger", schema=schema, pool_size=4)
    ledger_store.ensure_database(pg)
    try:
        plain = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
        grouped = ledger_store.open_ledger(
            pg, LedgerSettings(group_commit=True, group_commit_max_wait_s=args.max_wait_s)
        )
        rates = {
            "naive (one save per job)": naive(plain, args.naive_jobs),
            f"group commit ({args.callers} callers)": group_commit(
                grouped, args.jobs, args.callers
            ),
            "batch (save of 500)": batch(plain, args.jobs),
        }
        plain.close()
        grouped.close()
    finally:
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:8.0f} events/s")


if __name__ == "__main__":
    main()
