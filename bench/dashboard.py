"""The dashboard's jobs page with 10,000 jobs in the tenant and 50 ledger events a
second: how soon its first screen shows, and whether it keeps up with the stream.

    .venv/bin/python -m bench.dashboard [--jobs 10000] [--rate 50] [--seconds 30]

Starts the gateway, the projector, the dispatcher and a worker of the default pool
as separate processes on a fresh schema, submits ``--jobs`` jobs in batches of
1,000 to a pool no worker serves (they stay queued: seeding stays quick on a loaded
machine) and waits until the view holds them all. Then headless
Chromium (scripts/chromium) opens /dashboard five times: the first screen is the
time from the navigation's start to the frame showing the first 100 jobs (the page,
its script and GET /jobs). GET /jobs itself is timed alone too: the gateway's first
(which imports SQLAlchemy Core and compiles the statement), then 20 more, then 20
filtered on a status none of the jobs has. Then echo jobs are
submitted at ``--rate``/4 a second (an echo job is 4 events: Submitted, Started,
ProgressReported, Succeeded) for ``--seconds``, while the page's last applied
position is sampled against the ledger's each 0.5 s; at the end, the time the page
takes to apply the ledger's last event."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from bench.stack import Stack, stack
from gateway.caller import SCOPES
from gateway.tokens import mint
from infra.settings import DEV_AUTH_SECRET
from tests.integration.browser import Browser

BATCH = 1000


def seed(client: httpx.Client, jobs: int) -> None:
    started = time.monotonic()
    for first in range(0, jobs, BATCH):
        batch = [
            {"type": "side_echo", "case_id": f"case-{n % 500}", "params": {"text": f"job {n}"}}
            for n in range(first, min(first + BATCH, jobs))
        ]
        answer = client.post("/jobs/batch", json={"jobs": batch})
        answer.raise_for_status()
    while client.get("/queues").json()["projector"]["behind"]:
        time.sleep(0.5)
    print(f"seeded {jobs} jobs (projected) in {time.monotonic() - started:.1f} s", flush=True)


def head(s: Stack) -> int:
    """The ledger's last position, from PostgreSQL."""
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=jobledger") as conn:
        row = conn.execute(
            f"SELECT max(notification_id) FROM {s.schema}.jobledger_events"
        ).fetchone()
    return int(row[0] or 0) if row else 0


def submitter(s: Stack, rate: float, seconds: float, counted: list[int]) -> None:
    """Echo jobs at ``rate``/4 a second (4 events each) for ``seconds``: each submit
    from a pool of threads, on time whatever a slow answer takes."""
    interval = 4 / rate
    job = {"type": "echo", "case_id": "live", "params": {"text": "x"}}
    with (
        httpx.Client(base_url=s.url, headers=s.auth_headers(), timeout=60) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        started = next_submit = time.monotonic()
        while time.monotonic() - started < seconds:
            pool.submit(client.post, "/jobs", json=job)
            counted[0] += 1
            next_submit += interval
            time.sleep(max(0.0, next_submit - time.monotonic()))


def summary(values: list[float], unit: str) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"median {statistics.median(ordered):.0f} {unit}, p95 {p95:.0f} {unit}, "
        f"max {ordered[-1]:.0f} {unit}"
    )


def first_screens(browser: Browser, url: str, times: int) -> list[float]:
    found = []
    for _ in range(times):
        browser.goto("about:blank")
        browser.goto(url)
        found.append(
            float(browser.wait_for("Number(document.body.dataset.firstScreenMs)", 30, "rows"))
        )
        rows = browser.evaluate("document.querySelectorAll('#job-rows tr').length")
        assert rows == 100, rows
    return found


def keep_up(s: Stack, browser: Browser, rate: float, seconds: float) -> None:
    browser.wait_for("document.body.dataset.stream === 'open'", 30, "the stream")
    lags: list[float] = []
    counted = [0]
    load = threading.Thread(target=submitter, args=(s, rate, seconds, counted))
    started = time.monotonic()
    load.start()
    while load.is_alive():
        last = head(s)
        shown = int(browser.evaluate("Number(document.body.dataset.lastPosition || 0)"))
        lags.append(max(0, last - shown))
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    submitted = counted[0]
    time.sleep(1)  # the last jobs run
    last = head(s)
    done_at = time.monotonic()
    browser.wait_for(f"Number(document.body.dataset.lastPosition || 0) >= {last}", 30, "catch-up")
    catch_up_ms = (time.monotonic() - done_at) * 1000
    rows = browser.evaluate("document.querySelectorAll('#job-rows tr').length")
    print(
        f"live: {submitted} jobs in {elapsed:.1f} s ({submitted * 4 / elapsed:.0f} events/s); "
        f"page behind the ledger, sampled each 0.5 s: {summary(lags, 'events')}; "
        f"last event applied {catch_up_ms:.0f} ms after it was read; rows shown {rows}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0, help="ledger events a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}", flush=True)
    with (
        tempfile.TemporaryDirectory() as logdir,
        stack("tests.integration.app", Path(logdir)) as s,
    ):
        # Seeding submits faster than the default quota's rate allows.
        s.start("gateway", JOBLEDGER_QUOTA__SUBMITS_PER_S="0")
        for process in ("projector", "dispatcher"):
            s.start(process)
        s.start("worker", "--pool", "default")
        s.wait_ready()
        with httpx.Client(base_url=s.url, headers=s.auth_headers(), timeout=60) as client:
            seed(client, args.jobs)
            began = time.perf_counter()
            client.get("/jobs", params={"limit": 100}).raise_for_status()
            cold_ms = (time.perf_counter() - began) * 1000
            print(f"GET /jobs?limit=100, the gateway's first: {cold_ms:.0f} ms", flush=True)
            reads = []
            for _ in range(20):
                began = time.perf_counter()
                client.get("/jobs", params={"limit": 100}).raise_for_status()
                reads.append((time.perf_counter() - began) * 1000)
            print(f"GET /jobs?limit=100, 20 more: {summary(reads, 'ms')}", flush=True)
            failed: list[float] = []
            for _ in range(20):
                began = time.perf_counter()
                client.get("/jobs", params={"limit": 100, "status": "failed"}).raise_for_status()
                failed.append((time.perf_counter() - began) * 1000)
            print(f"GET /jobs?status=failed (none): {summary(failed, 'ms')}", flush=True)
            token = mint(DEV_AUTH_SECRET, tenant="dev", subject="bench", scopes=SCOPES)
            browser = Browser(Path(logdir) / "profile")
            try:
                url = f"{s.url}/dashboard?access_token={token}#/jobs"
                screens = first_screens(browser, url, 5)
                print(f"first screen (100 of {args.jobs} jobs): {summary(screens, 'ms')}")
                keep_up(s, browser, args.rate, args.seconds)
            finally:
                browser.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
