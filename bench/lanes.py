"""Lanes under a backlog, on the real stack (`jobledger run`, a worker of the default
settings): with 10,000 no-op jobs queued, how soon a probe job starts, and how fast the
backlog still runs meanwhile. Three scenarios, a fresh stack each:

- priority: 10,000 low jobs of tenant A, then high probes of A: the probe's start delay
  (submit answered → `Started`);
- fairness: 10,000 normal jobs of tenant A, then normal probes of tenant B;
- retry: 10,000 normal jobs of tenant A, then probes of tenant B that ask for a retry
  2 s later on their first attempt: the retry's lateness (`Started` of attempt 2 minus
  the `retry_at` of the `AttemptFailed`).

Once the backlog is all published and projected, its rate alone is measured for
``--baseline-s``; then probes go one at a time, each once the one before has started
(``--gap-s`` apart), while at least ``--min-waiting`` backlog jobs still wait. Prints
p50/p99/max of each, and the backlog's rate alone and during the probes.

    .venv/bin/python bench/lanes.py                      # 10,000 jobs, 30 probes each
    .venv/bin/python bench/lanes.py --backlog 2000 --probes 10 --only fairness
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.stack import Stack, stack
from gateway.caller import SCOPES
from gateway.tokens import mint
from infra.settings import DEV_AUTH_SECRET

SCENARIOS = ("priority", "fairness", "retry")


def client_of(s: Stack, tenant: str) -> httpx.Client:
    token = mint(DEV_AUTH_SECRET, tenant=tenant, subject="bench", scopes=SCOPES)
    return httpx.Client(base_url=s.url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def count(s: Stack, sql: str) -> int:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=jobledger") as c:
        row = c.execute(sql.format(schema=s.schema)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def waiting(s: Stack) -> int:
    """Backlog jobs not started yet, from the job view."""
    return count(
        s, "SELECT count(*) FROM {schema}.job_view WHERE case_id = 'backlog' AND status = 'queued'"
    )


def done(s: Stack) -> int:
    """Backlog jobs that ran, from the job view."""
    return count(
        s,
        "SELECT count(*) FROM {schema}.job_view WHERE case_id = 'backlog' AND status = 'succeeded'",
    )


def queued_in_broker(s: Stack, n: int) -> None:
    """Wait until the dispatcher has published the backlog and the view holds it all:
    the backlog is queued, and the probes' delays are not the dispatcher's catching up."""
    while True:
        head = count(s, "SELECT max(notification_id) FROM {schema}.jobledger_events")
        published = count(s, "SELECT max(notification_id) FROM {schema}.dispatcher_tracking")
        projected = count(s, "SELECT count(*) FROM {schema}.job_view WHERE case_id = 'backlog'")
        if head and published >= head and projected >= n:
            return
        time.sleep(0.1)


def queue_backlog(client: httpx.Client, n: int, priority: str) -> None:
    for start in range(0, n, 1000):
        jobs = [
            {"type": "noop", "case_id": "backlog", "params": {"n": i}, "priority": priority}
            for i in range(start, min(start + 1000, n))
        ]
        response = client.post("/jobs/batch", json={"jobs": jobs})
        response.raise_for_status()


def events_of(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/jobs/{job_id}/events").json()
    return events


def probe(client: httpx.Client, scenario: str) -> float:
    """Submit one probe; its delay (s) once it started (for retry: attempt 2)."""
    job_type = "retry_once" if scenario == "retry" else "noop"
    priority = "high" if scenario == "priority" else "normal"
    response = client.post(
        "/jobs", json={"type": job_type, "case_id": "probe", "params": {}, "priority": priority}
    )
    response.raise_for_status()
    submitted = time.time()
    job_id = response.json()["id"]
    wanted = 2 if scenario == "retry" else 1
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["attempt"] >= wanted and job["started_at"]:
            break
        time.sleep(0.1)  # the delays are read from the ledger, not from this poll
    started = datetime.fromisoformat(job["started_at"]).timestamp()
    if scenario != "retry":
        return started - submitted
    failed = next(e for e in events_of(client, job_id) if e["type"] == "AttemptFailed")
    due = datetime.fromisoformat(failed["data"]["retry_at"]).timestamp()
    return started - due


def run(
    scenario: str, backlog: int, probes: int, min_waiting: int, gap_s: float, baseline_s: float
) -> None:
    with tempfile.TemporaryDirectory() as logdir, stack("bench.lanes_app", Path(logdir)) as s:
        s.start("run", JOBLEDGER_QUOTA__SUBMITS_PER_S="0")  # 10,000 at once
        s.wait_ready()
        with client_of(s, "tenant-a") as a, client_of(s, "tenant-b") as b:
            queued_at = time.monotonic()
            queue_backlog(a, backlog, "low" if scenario == "priority" else "normal")
            queued_in_broker(s, backlog)
            queued_s = time.monotonic() - queued_at
            prober = a if scenario == "priority" else b
            alone, alone_began = done(s), time.monotonic()
            time.sleep(baseline_s)  # the backlog's rate with nothing else waiting
            before, began = done(s), time.monotonic()
            alone_rate = (before - alone) / (began - alone_began)
            delays: list[float] = []
            while len(delays) < probes and waiting(s) >= min_waiting:
                delays.append(probe(prober, scenario))
                time.sleep(gap_s)
            after, took, left = done(s), time.monotonic() - began, waiting(s)
    if not delays:
        print(f"{scenario:<9} no probe: the backlog ran out first", flush=True)
        return
    ms = sorted(1000 * d for d in delays)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    what = "lateness" if scenario == "retry" else "start delay"
    print(
        f"{scenario:<9} {what:<11} n={len(ms):>3}  p50 {statistics.median(ms):6.0f} ms  "
        f"p99 {p99:6.0f} ms  max {ms[-1]:6.0f} ms  | backlog of {backlog} queued in "
        f"{queued_s:.1f} s; meanwhile {after - before} of it ran in {took:.1f} s "
        f"({(after - before) / took:.0f} jobs/s; alone {alone_rate:.0f} jobs/s), "
        f"{left} still waiting",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--min-waiting", type=int, default=1000)
    parser.add_argument("--gap-s", type=float, default=0.2, help="between probes")
    parser.add_argument("--baseline-s", type=float, default=5.0, help="backlog alone, first")
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    args = parser.parse_args()
    for scenario in args.only or SCENARIOS:
        run(scenario, args.backlog, args.probes, args.min_waiting, args.gap_s, args.baseline_s)


if __name__ == "__main__":
    main()
