"""A chaos run: thousands of mixed jobs through the real processes, on a PostgreSQL
cluster and a RabbitMQ node of the run's own, while workers, the dispatcher and the
projector are killed -9, RabbitMQ and PostgreSQL restart, COMMITs lose their replies
and AMQP connections drop right after starts. Then the ledger is checked and the
counts printed as a table; the exit code is 1 if any loss/duplicate/invalid/mismatch
count is not zero.

    .venv/bin/python -m bench.chaos -n 2000                 # about 4 minutes
    .venv/bin/python -m bench.chaos -n 300 --faults-s 40    # a short one

Checked from the ledger (and the handlers' own log of their runs):
  lost                  jobs not succeeded or failed at the end
  attempt run twice     a (job, attempt) whose handler started more than once
  lost though alive     an attempt recorded lost though its worker was never killed
  invalid history       a history that is not a path of the state machine
                        (domain/history.py: the same status_after fold the aggregate uses)
  failed not in DLQ     failed jobs with no message in the DLQ
  in DLQ twice          jobs with more than one message in the DLQ
  in DLQ, not failed    DLQ messages of jobs that did not fail
  view != replay        job_view rows that differ from the aggregate replayed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from eventsourcing.persistence import StoredEvent

from bench.stack import ROOT
from domain.errors import DuplicateSubmission
from domain.history import problems
from domain.job import Job
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from projections.projection import JobRow, differences
from tests.faults import PrivatePostgres, PrivateRabbit, TcpProxy, scratch_dir

LEDGER_WRITE = b"_events_append"  # every append is one call of this function, its commit
ORIGIN = Origin("chaos", "chaos")


class Run:
    """The servers, the proxies in front of them, and the processes."""

    def __init__(self, root: Path, workers: int) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.handler_log = root / "handlers.jsonl"
        self.pg = PrivatePostgres(root / "pg")
        self.rabbit = PrivateRabbit(root / "rabbit")
        self.workers = workers
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.faults: Counter[str] = Counter()
        self.killed: set[int] = set()  # pids of the processes the run killed
        self.lock = threading.Lock()

    def start_servers(self) -> None:
        self.pg.start()
        self.rabbit.start()
        self.pg_proxy = TcpProxy("127.0.0.1", self.pg.port).start()
        self.amqp_proxy = TcpProxy("127.0.0.1", self.rabbit.amqp_port).start()
        self.settings = PostgresSettings(port=self.pg.port, dbname="jobledger")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JOBLEDGER_", "OTEL_"))},
            "PYTHONPATH": str(ROOT),
            "JOBLEDGER_APP": "bench.chaos_app",
            "JOBLEDGER_POSTGRES__PORT": str(self.pg.port),
            "JOBLEDGER_POSTGRES__DBNAME": "jobledger",
            "JOBLEDGER_AMQP__URL": self.rabbit.url,
            "JOBLEDGER_AMQP__MANAGEMENT_URL": self.rabbit.management_url,
            "JOBLEDGER_AMQP__DELAY_LEVELS": "6",
            "JOBLEDGER_WORKER__HEARTBEAT_INTERVAL_S": "1",
            "JOBLEDGER_WORKER__HEARTBEAT_TTL_S": "4",
            "JOBLEDGER_WORKER__CONCURRENCY": "8",
            "JOBLEDGER_WORKER__PREFETCH": "8",
            "JOBLEDGER_WORKER__SHUTDOWN_TIMEOUT_S": "5",
            "JOBLEDGER_CHAOS_LOG": str(self.handler_log),
        }
        # Workers reach both servers through proxies, so that their connections can be cut.
        self.worker_env = {
            "JOBLEDGER_POSTGRES__PORT": str(self.pg_proxy.port),
            "JOBLEDGER_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{self.amqp_proxy.port}/",
        }

    def start(self, name: str, *command: str, **env: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "--log-level", "warning", *command],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_worker(self, n: int) -> None:
        self.start(f"worker{n}", "worker", **self.worker_env)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        self.killed.add(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop_all()
        for name in ("pg_proxy", "amqp_proxy"):
            if hasattr(self, name):
                getattr(self, name).close()
        for closing in (self.rabbit.stop, self.pg.stop):
            with contextlib.suppress(Exception):
                closing()


def submit(ledger: Any, n: int, rand: random.Random) -> list[tuple[uuid.UUID, str]]:
    """``n`` jobs: most succeed at once or after a while, some only after failed
    attempts, some fail for good (at once, or once their attempts are spent). A
    submit that meets a server being restarted is tried again under the same id."""
    kinds = ["ok"] * 60 + ["flaky"] * 20 + ["doomed"] * 10 + ["exhausted"] * 10
    jobs = []
    for _ in range(n):
        kind = rand.choice(kinds)
        seconds = rand.choice([0.0, 0.05, 0.2, 0.5, 1.5, 3.0])
        params = {"seconds": seconds, "fail_attempts": rand.randint(1, 2) if kind == "flaky" else 0}
        job_id = uuid.uuid4()
        for _ in range(120):
            try:
                ledger.submit_job(
                    job_id=job_id,
                    tenant="chaos",
                    case_id=f"case-{rand.randint(1, 50)}",
                    job_type=kind,
                    params=params,
                    pool="default",
                    max_attempts=3,
                    origin=ORIGIN,
                )
            except DuplicateSubmission:
                pass  # the earlier try landed; its reply was lost
            except Exception as exc:
                print(f"  submit of {job_id} retried ({type(exc).__name__})")
                time.sleep(0.5)
                continue
            break
        jobs.append((job_id, kind))
    return jobs


def inject_faults(run: Run, until: float, stop: threading.Event, rand: random.Random) -> None:
    """Every fault, again and again, until ``until`` (monotonic)."""
    began = time.monotonic()
    next_at = {
        "worker killed -9": began + 3,
        "dispatcher killed -9": began + 11,
        "projector killed -9": began + 17,
        "COMMIT reply lost": began + 2,
        "AMQP connections dropped": began + 5,
        "RabbitMQ restarted": began + 25,
        "PostgreSQL restarted": began + 45,
        "PostgreSQL crashed": began + 70,
    }
    every = {
        "worker killed -9": 4.0,
        "dispatcher killed -9": 20.0,
        "projector killed -9": 25.0,
        "COMMIT reply lost": 3.0,
        "AMQP connections dropped": 9.0,
        "RabbitMQ restarted": 60.0,
        "PostgreSQL restarted": 60.0,
        "PostgreSQL crashed": 60.0,
    }
    while not stop.is_set() and time.monotonic() < until:
        now = time.monotonic()
        for fault, at in sorted(next_at.items(), key=lambda kv: kv[1]):
            if at > now:
                continue
            next_at[fault] = now + every[fault] * rand.uniform(0.7, 1.3)
            apply(run, fault, rand)
            run.faults[fault] += 1
        time.sleep(0.2)


def apply(run: Run, fault: str, rand: random.Random) -> None:
    match fault:
        case "worker killed -9":
            n = rand.randrange(run.workers)
            run.kill(f"worker{n}")
            run.start_worker(n)
        case "dispatcher killed -9":
            run.kill("dispatcher")
            run.start("dispatcher", "dispatcher")
        case "projector killed -9":
            run.kill("projector")
            run.start("projector", "projector")
        case "COMMIT reply lost":
            run.pg_proxy.cut_after_commit(1, writing=LEDGER_WRITE)
        case "AMQP connections dropped":
            run.faults["AMQP connections cut"] += run.amqp_proxy.connections
            run.amqp_proxy.cut_all()
        case "RabbitMQ restarted":
            run.rabbit.stop_app()
            run.rabbit.start_app()
        case "PostgreSQL restarted":
            run.pg.restart("fast")
        case "PostgreSQL crashed":
            run.pg.kill()
            run.pg.start()


def wait_until_settled(run: Run, n: int, timeout_s: float) -> float:
    """Seconds until every job is succeeded or failed in the view and the view has
    caught up with the ledger (or the timeout)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        with contextlib.suppress(psycopg.Error), psycopg.connect(run.pg.dsn("jobledger")) as c:
            done = c.execute(
                "SELECT count(*) FROM job_view WHERE status IN ('succeeded', 'failed')"
            ).fetchone()
            head = c.execute("SELECT max(notification_id) FROM jobledger_events").fetchone()
            seen = c.execute("SELECT max(notification_id) FROM job_view_tracking").fetchone()
            if done and done[0] >= n and head and seen and seen[0] == head[0]:
                return time.monotonic() - began
        time.sleep(1)
    return time.monotonic() - began


def histories(run: Run, ledger: Any) -> dict[uuid.UUID, list[Any]]:
    found: dict[uuid.UUID, list[Any]] = {}
    with psycopg.connect(run.pg.dsn("jobledger")) as c:
        rows = c.execute(
            "SELECT originator_id, originator_version, topic, state FROM jobledger_events "
            "ORDER BY notification_id"
        )
        for originator_id, version, topic, state in rows:
            event = ledger.mapper.to_domain_event(
                StoredEvent(originator_id, version, topic, bytes(state))
            )
            found.setdefault(originator_id, []).append(event)
    return found


def view_rows(run: Run) -> dict[uuid.UUID, JobRow]:
    with psycopg.connect(run.pg.dsn("jobledger"), row_factory=psycopg.rows.dict_row) as c:
        return {row["job_id"]: JobRow(**row) for row in c.execute("SELECT * FROM job_view")}


async def drain_dlq(url: str, queue: str) -> list[str]:
    """Every message's job id in the DLQ (taken out: the run is over)."""
    connection = await aio_pika.connect(url)
    ids: list[str] = []
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(queue)
        while (message := await dlq.get(no_ack=True, fail=False)) is not None:
            ids.append(str((message.headers or {}).get("x-job-id")))
    return ids


def handler_runs(path: Path) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]]]:
    """How often each (job, attempt)'s handler started, and ended."""
    starts: Counter[tuple[str, int]] = Counter()
    ends: Counter[tuple[str, int]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            key = (entry["job"], entry["attempt"])
            (starts if entry["event"] == "start" else ends)[key] += 1
    return starts, ends


def lost_though_alive(by_job: dict[uuid.UUID, list[Any]], killed: set[int]) -> int:
    """Attempts the ledger says were lost though the worker that ran them was never
    killed: a live worker's attempt taken for a dead one's."""
    lost = 0
    for history in by_job.values():
        worker = ""
        for event in history:
            if isinstance(event, Job.Started):
                worker = event.worker_id
            elif isinstance(event, Job.AttemptFailed) and "was lost" in event.error:
                pid = int(worker.split(":")[1]) if worker.count(":") >= 2 else -1
                lost += pid not in killed
    return lost


def check(run: Run, jobs: list[tuple[uuid.UUID, str]], ledger: Any) -> dict[str, int]:
    by_job = histories(run, ledger)
    statuses: dict[uuid.UUID, str] = {}
    invalid = 0
    for job_id, _ in jobs:
        history = by_job.get(job_id, [])
        found = problems(history)
        if found:
            invalid += 1
            print(f"  invalid history of {job_id}: {found}")
        replayed: Any = None
        for event in history:
            replayed = event.mutate(replayed)
        statuses[job_id] = replayed.status.value if isinstance(replayed, Job) else "missing"
    rows = view_rows(run)
    mismatched = 0
    for job_id, _ in jobs:
        replayed = None
        for event in by_job.get(job_id, []):
            replayed = event.mutate(replayed)
        row = rows.get(job_id)
        differ = ["no job"] if replayed is None else differences(row, replayed)
        if differ:
            mismatched += 1
            print(f"  view of {job_id} differs in {differ}")
    dead = asyncio.run(drain_dlq(run.rabbit.url, "jobledger.dead"))
    dead_count = Counter(dead)
    failed = {str(j) for j, _ in jobs if statuses[j] == "failed"}
    starts, ends = handler_runs(run.handler_log)
    lost = [j for j, _ in jobs if statuses[j] not in ("succeeded", "failed")]
    for job_id in lost[:10]:
        print(
            f"  lost: {job_id} is {statuses[job_id]}: {[type(e).__name__ for e in by_job.get(job_id, [])]}"
        )
    return {
        "jobs": len(jobs),
        "succeeded": sum(s == "succeeded" for s in statuses.values()),
        "failed": len(failed),
        "lost": len(lost),
        "attempt run twice": sum(n > 1 for n in starts.values()),
        "attempt ended twice": sum(n > 1 for n in ends.values()),
        "lost though alive": lost_though_alive(by_job, run.killed),
        "invalid history": invalid,
        "failed not in DLQ": len(failed - set(dead_count)),
        "in DLQ twice": sum(n > 1 for n in dead_count.values()),
        "in DLQ, not failed": len(set(dead_count) - failed),
        "view != replay": mismatched,
    }


MUST_BE_ZERO = (
    "lost",
    "attempt run twice",
    "attempt ended twice",
    "lost though alive",
    "invalid history",
    "failed not in DLQ",
    "in DLQ twice",
    "in DLQ, not failed",
    "view != replay",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="jobs")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--faults-s", type=float, default=150, help="how long faults go on")
    parser.add_argument("--settle-s", type=float, default=300, help="longest wait after")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rand = random.Random(seed)
    root = scratch_dir("chaos-")
    run = Run(root, args.workers)
    print(
        f"chaos run: {args.n} jobs, {args.workers} workers, faults for {args.faults_s:.0f} s, "
        f"seed {seed}, logs in {run.logs}"
    )
    try:
        run.start_servers()
        ledger_store.ensure_database(run.settings)
        ledger = ledger_store.open_ledger(run.settings, LedgerSettings())
        run.start("dispatcher", "dispatcher")
        run.start("projector", "projector")
        for n in range(args.workers):
            run.start_worker(n)
        began = time.monotonic()
        stop = threading.Event()
        injecting = threading.Thread(
            target=inject_faults, args=(run, began + args.faults_s, stop, rand), daemon=True
        )
        injecting.start()
        jobs: list[tuple[uuid.UUID, str]] = []
        waves = 20
        for wave in range(waves):
            size = args.n // waves + (1 if wave < args.n % waves else 0)
            jobs += submit(ledger, size, rand)
            time.sleep(args.faults_s * 0.6 / waves)
        injecting.join()
        stop.set()
        settled_s = wait_until_settled(run, len(jobs), args.settle_s)
        took = time.monotonic() - began
        counts = check(run, jobs, ledger)
    finally:
        run.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    run.faults["COMMIT replies cut"] = run.pg_proxy.commits_cut
    print(f"\nfaults injected ({args.faults_s:.0f} s):")
    for fault, count in sorted(run.faults.items()):
        print(f"  {fault:<26} {count:>5}")
    print(f"\nsettled {settled_s:.0f} s after the faults; {took:.0f} s in all\n")
    print(f"  {'count':<22} {'value':>7}")
    for name, value in counts.items():
        flag = "  <-- must be 0" if name in MUST_BE_ZERO and value else ""
        print(f"  {name:<22} {value:>7}{flag}")
    return 1 if any(counts[name] for name in MUST_BE_ZERO) else 0


if __name__ == "__main__":
    raise SystemExit(main())
