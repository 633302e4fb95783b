"""End-to-end throughput and latency of no-op jobs, every transition in the ledger, and
the peers on the same workload in the same run.

    .venv/bin/python -m bench.throughput -n 5000 --workers 2 -c 8               # over HTTP
    .venv/bin/python -m bench.throughput -n 5000 --submit direct                # ledger directly
    .venv/bin/python -m bench.throughput -n 5000 --peers                        # + Celery, Dramatiq, raw AMQP
    .venv/bin/python -m bench.throughput -n 3000 --submit direct --rate 150     # latency at a steady rate

Reports: jobs/s (first submit to last ``Succeeded`` in the ledger), submit→running and
submit→succeeded p50/p95/p99 (from the ledger's own timestamps, through the job view),
ledger events/s, the projector's largest lag, and each process's peak RSS; it fails
unless every job has exactly one ``Succeeded`` in the ledger. With
--peers, bench/setup_peers.sh must have run; ratios are printed at the end (with
--rate, the job-system peers are paced at the same rate).
jobledger publishes with confirms; the peers do not by default (see RESULTS.md there),
so --peers also runs them with confirms: Celery+PG, Dramatiq with its one commit per
job, and Dramatiq with a job table written at submit, start and finish
(bench/peer_dramatiq_ledger.py), the equal-durability peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench import http_load
from bench.stack import ROOT, Stack, stack
from domain.job import Job
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings

PEERS = ROOT.parent / "shared" / "bench" / "peers"
PEER_PY = ROOT / "bench" / ".venv" / "bin" / "python"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": q[49] * 1e3, "p95_ms": q[94] * 1e3, "p99_ms": q[98] * 1e3}


class MachineCpu:
    """CPU time spent on the whole machine, by RabbitMQ and by PostgreSQL, between two
    readings: what a system costs its servers as well as its own processes. Busy time
    is user, nice, system and interrupts (not steal). PostgreSQL's is every postgres
    process's own time plus the time of the backends that exited, which the postmaster
    collects as its children's (a peer that connects per task or per batch has most of
    its backends gone by the end of its run). ``benchmark`` is this process's own share
    of the machine's: the direct submits, the polling and the sampling (a peer's client
    is a process of its own, counted in the machine's)."""

    def __init__(self) -> None:
        self.start = self.read()

    @staticmethod
    def read() -> dict[str, float]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
        times = {"machine": float(user + nice + system + irq + softirq), "rabbitmq": 0.0}
        times["postgresql"] = 0.0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                group = {"beam.smp": "rabbitmq", "postgres": "postgresql"}.get(name)
                if group:
                    # utime, stime, and the times of the children it waited for
                    times[group] += sum(map(int, stat.rsplit(")", 1)[1].split()[11:15]))
        seconds = {k: v / CLOCK_TICKS for k, v in times.items()}
        own = os.times()
        seconds["benchmark"] = own.user + own.system  # this process: submits, polling, samples
        return seconds

    def ms_per_job(self, jobs: int) -> dict[str, float]:
        end = self.read()
        return {k: round((end[k] - self.start[k]) * 1e3 / jobs, 2) for k in end}


class Sampler(threading.Thread):
    """Every 0.2 s: ledger size, view position and each process's RSS."""

    def __init__(self, s: Stack, pg: PostgresSettings) -> None:
        super().__init__(daemon=True)
        self.s, self.pg = s, pg
        self.stop = threading.Event()
        self.max_lag = 0
        self.peak_rss_mb: dict[str, float] = {}
        self.rss_mb: dict[str, list[float]] = {}
        self.cpu_s: dict[str, float] = {}  # user + system, at the last sample
        self.cpu_start_s: dict[str, float] = {}  # ... at the first, once started up

    def run(self) -> None:
        self.sample()  # CPU from here on is the run's; start-up is behind every process
        with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
            while not self.stop.wait(0.2):
                head = conn.execute(
                    f"SELECT max(notification_id) FROM {self.s.schema}.jobledger_events"
                ).fetchone()
                seen = conn.execute(
                    f"SELECT max(notification_id) FROM {self.s.schema}.job_view_tracking "
                    "WHERE application_name = 'JobLedger'"
                ).fetchone()
                if head and head[0]:
                    self.max_lag = max(self.max_lag, head[0] - ((seen and seen[0]) or 0))
                self.sample()

    def sample(self) -> None:
        for name, pid in self.s.pids().items():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if "VmHWM" not in fields:  # a process that is exiting has no memory left
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
                self.cpu_s[name] = sum(map(int, ticks)) / CLOCK_TICKS
                self.cpu_start_s.setdefault(name, self.cpu_s[name])
            hwm, rss = (int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS"))
            self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0), hwm)
            self.rss_mb.setdefault(name, []).append(rss)

    def quarters_mb(self) -> dict[str, list[float]]:
        """Each process's resident memory at 0, 25, 50, 75 and 100 % of the run: a leak
        climbs through all of them, a cache filling up levels off."""
        return {
            name: [
                round(samples[min(len(samples) - 1, len(samples) * q // 4)], 1) for q in range(5)
            ]
            for name, samples in sorted(self.rss_mb.items())
            if len(samples) >= 8
        }

    def growth_mb(self) -> dict[str, float]:
        """Each process's resident memory at the end minus at a quarter of the run,
        once start-up allocations are behind it: what a long run would keep adding."""
        return {
            name: round(samples[-1] - samples[len(samples) // 4], 1)
            for name, samples in sorted(self.rss_mb.items())
            if len(samples) >= 8
        }


def submit_http(url: str, n: int, concurrency: int, headers: dict[str, str]) -> float:
    """``n`` POST /jobs from ``concurrency`` keep-alive connections (bench/http_load.py)."""

    def body(i: int) -> bytes:
        return json.dumps(
            {"type": "noop", "case_id": f"bench-{i % 50}", "params": {"n": i}}
        ).encode()

    seconds, statuses, _ = http_load.post(url, "/jobs", body, headers, n, concurrency)
    if set(statuses) != {202}:
        raise RuntimeError(f"submits refused: {dict(statuses)}")
    return seconds


def submit_direct(pg: PostgresSettings, n: int, batch: int = 500, rate: float = 0) -> float:
    """Straight into the ledger: ``batch`` jobs per save as fast as it goes, or with a
    ``rate``, on a steady schedule of that many a second: each save takes the jobs
    due by then (one, at a low rate; more when a save took longer than the gap)."""
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    origin = Origin(actor="bench")

    def job(i: int) -> Job:
        return Job.submit(
            job_id=uuid.uuid4(),
            tenant="dev",
            case_id=f"bench-{i % 50}",
            job_type="noop",
            params={"n": i},
            pool="default",
            max_attempts=3,
            origin=origin,
        )

    started = time.monotonic()
    if rate:
        i = 0
        while i < n:
            due = min(n, int((time.monotonic() - started) * rate) + 1)
            if due > i:
                ledger.save(*(job(k) for k in range(i, due)))
                i = due
            else:
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
    else:
        for first in range(0, n, batch):
            ledger.save(*(job(i) for i in range(first, min(first + batch, n))))
    took = time.monotonic() - started
    ledger.close()
    return took


class SucceededCount:
    """Counts the ledger's Succeeded events, reading only what was appended since the
    last call: counting the whole ledger every 50 ms would load PostgreSQL with the
    benchmark's own polling."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.query = (
            f"SELECT max(notification_id), count(*) FILTER (WHERE topic = "
            f"'domain.job:Job.Succeeded') FROM {schema}.jobledger_events "
            "WHERE notification_id > %s"
        )
        self.position = 0
        self.count = 0

    def __call__(self) -> int:
        head, succeeded = self.conn.execute(self.query, (self.position,)).fetchone() or (None, 0)
        if head is not None:
            self.position, self.count = head, self.count + succeeded
        return self.count


def check_one_success_each(conn: psycopg.Connection[Any], schema: str, jobs: int) -> None:
    """Every job submitted has exactly one Succeeded in the ledger, and no job more."""
    submitted, succeeded, succeeded_jobs = conn.execute(
        f"SELECT count(*) FILTER (WHERE originator_version = 1), "
        f"count(*) FILTER (WHERE topic = 'domain.job:Job.Succeeded'), "
        f"count(DISTINCT originator_id) FILTER (WHERE topic = 'domain.job:Job.Succeeded') "
        f"FROM {schema}.jobledger_events"
    ).fetchone() or (0, 0, 0)
    if not submitted == succeeded == succeeded_jobs == jobs:
        raise RuntimeError(
            f"{jobs} jobs: {submitted} submitted, {succeeded} successes of {succeeded_jobs} jobs"
        )


def run_jobledger(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as logdir, stack("bench.noop_app", Path(logdir)) as s:
        pg = PostgresSettings(dbname="jobledger", schema=s.schema)
        common = {
            "JOBLEDGER_WORKER__CONCURRENCY": str(args.concurrency),
            "JOBLEDGER_WORKER__PREFETCH": str(args.prefetch),
        }
        s.start("gateway", "--processes", str(args.gateway_processes), **common)
        s.start("dispatcher", **common)
        s.start("projector", **common)
        s.start("worker", "--processes", str(args.workers), **common)
        s.wait_ready()
        time.sleep(3)  # let every worker process connect
        sampler = Sampler(s, pg)
        sampler.start()
        machine = MachineCpu()
        t0 = time.monotonic()
        if args.submit == "http":
            submit_s = submit_http(s.url, args.jobs, args.http_concurrency, s.auth_headers())
        else:
            submit_s = submit_direct(pg, args.jobs, rate=args.rate)
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            succeeded = SucceededCount(conn, s.schema)
            while succeeded() < args.jobs:
                if time.monotonic() - t0 > args.timeout:
                    raise RuntimeError("timed out")
                time.sleep(0.05)
            e2e = time.monotonic() - t0
            machine_ms = machine.ms_per_job(args.jobs)
            sampler.sample()  # each process's CPU over the same window as the machine's
            process_cpu_s = dict(sampler.cpu_s)
            events = conn.execute(f"SELECT count(*) FROM {s.schema}.jobledger_events").fetchone()[0]
            check_one_success_each(conn, s.schema, args.jobs)
            caught_up = time.monotonic()
            head = conn.execute(
                f"SELECT max(notification_id) FROM {s.schema}.jobledger_events"
            ).fetchone()[0]
            while (
                conn.execute(
                    f"SELECT max(notification_id) FROM {s.schema}.job_view_tracking "
                    "WHERE application_name='JobLedger'"
                ).fetchone()[0]
                or 0
            ) < head:
                time.sleep(0.01)
            catch_up_s = time.monotonic() - caught_up
            rows = conn.execute(
                f"SELECT extract(epoch FROM started_at - submitted_at), "
                f"extract(epoch FROM finished_at - submitted_at) FROM {s.schema}.job_view"
            ).fetchall()
        sampler.stop.set()
        sampler.join()
    return {
        "system": f"jobledger ({args.submit} submit{f' at {args.rate:g}/s' if args.rate else ''}, "
        f"{args.workers} worker procs x c={args.concurrency}"
        f"{f', {args.gateway_processes} gateway procs' if args.gateway_processes > 1 else ''})",
        "n": args.jobs,
        "submit_s": round(submit_s, 2),
        "e2e_s": round(e2e, 2),
        "throughput_per_s": round(args.jobs / e2e, 1),
        "ledger_events_per_s": round(events / e2e, 1),
        "events": events,
        "to_running": percentiles([float(r[0]) for r in rows]),
        "to_succeeded": percentiles([float(r[1]) for r in rows]),
        "projector_max_lag_events": sampler.max_lag,
        "projector_max_lag_s": round(sampler.max_lag / (events / e2e), 3),
        "projector_catch_up_s": round(catch_up_s, 3),
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(sampler.peak_rss_mb.items())},
        "rss_growth_mb": sampler.growth_mb(),
        "rss_quarters_mb": sampler.quarters_mb(),
        # From the first submit to the last job done: the machine, RabbitMQ, PostgreSQL
        "machine_cpu_ms_per_job": machine_ms,
        # ... and each of jobledger's processes
        "cpu_ms_per_job": {
            k: round((v - sampler.cpu_start_s[k]) * 1e3 / args.jobs, 2)
            for k, v in sorted(process_cpu_s.items())
        },
    }


def run_peer(script: str, *argv: str) -> dict[str, Any]:
    # The job systems warm up on 100 jobs first; the raw broker loop has no such option.
    warmup = [] if script == "raw_limits.py" else ["--warmup", "100"]
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        machine = MachineCpu()
        subprocess.run(
            [str(PEER_PY), script, *argv, "--reps", "1", *warmup, "--out", out.name],
            cwd=PEERS,
            check=True,
            capture_output=True,
            timeout=1800,
        )
        record: dict[str, Any] = json.loads(Path(out.name).read_text().splitlines()[-1])
    # The peer's whole run, its start-up and warm-up included: an upper bound. The raw
    # broker loop sends its N messages through twice (apart, then publishing while
    # consuming).
    handled = int(argv[argv.index("-n") + 1]) * (2 if script == "raw_limits.py" else 1)
    record["machine_cpu_ms_per_job"] = machine.ms_per_job(handled)
    return record


def in_window(median: dict[str, Any]) -> float | None:
    """The machine's busy CPU a job over the peer's own measured window (first submit
    to last job done), from its busy share of the machine's cores: without its start
    and warm-up, which the whole run's figure spreads over the jobs."""
    if "cpu_busy_pct" not in median or "e2e_s" not in median:
        return None
    cores = os.cpu_count() or 1
    return round(cores * median["cpu_busy_pct"] / 100 * median["e2e_s"] * 1e3 / median["n"], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--jobs", type=int, default=5000)
    parser.add_argument("--submit", choices=["http", "direct"], default="http")
    parser.add_argument("--http-concurrency", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=0, help="direct submit: jobs a second, one per save"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--gateway-processes", type=int, default=1, help="gateway processes")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="jobs at once per worker")
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--peers", action="store_true", help="also run Celery, Dramatiq, raw AMQP")
    args = parser.parse_args()

    results = [run_jobledger(args)]
    print(json.dumps(results[-1]), flush=True)
    if args.peers:
        n = str(args.jobs)
        peers = {
            "celery+pg-backend prefork c=8": (
                "celery_rabbit_pg.py",
                "--backend",
                "pg",
                "--pool",
                "prefork",
                "-c",
                "8",
                "-n",
                n,
            ),
            "dramatiq pg-sink 2p x 4t": ("dramatiq_rabbit.py", "--sink", "pg", "-c", "8", "-n", n),
            # Equal durability: publisher confirms, and state in PostgreSQL at each step.
            "celery+pg-backend +confirm prefork c=8": (
                "celery_rabbit_pg.py",
                "--backend",
                "pg",
                "--pool",
                "prefork",
                "-c",
                "8",
                "--confirm-publish",
                "-n",
                n,
            ),
            "dramatiq pg-sink +confirm 2p x 4t": (
                "dramatiq_rabbit.py",
                "--sink",
                "pg",
                "-c",
                "8",
                "--confirm",
                "-n",
                n,
            ),
            "dramatiq job table (3 commits) +confirm 2p x 4t": (
                str(ROOT / "bench" / "peer_dramatiq_ledger.py"),
                "-c",
                "8",
                "-n",
                n,
            ),
            "raw aio-pika quorum pub+consume": (
                "raw_limits.py",
                "amqp",
                "--queue-type",
                "quorum",
                "-n",
                n,
            ),
        }
        paced = ("--rate", f"{args.rate:g}") if args.rate else ()
        for name, argv in peers.items():
            # The job systems are paced as jobledger was; the raw broker loop is not.
            record = run_peer(*argv, *(paced if argv[0] != "raw_limits.py" else ()))
            median = record.get("median", {})
            rate = (
                median.get("throughput_per_s")
                or median.get("pubsub_per_s")  # raw_limits.py: publish while consuming
            )
            cpu = record["machine_cpu_ms_per_job"]
            print(
                json.dumps(
                    {
                        "system": name,
                        "throughput_per_s": rate,
                        "median": median,
                        "machine_cpu_ms_per_job (whole run, an upper bound)": cpu,
                        "machine_cpu_ms_per_job (its measured window)": in_window(median),
                    }
                ),
                flush=True,
            )
            results.append({"system": name, "throughput_per_s": rate})
        ours = results[0]["throughput_per_s"]
        for peer in results[1:]:
            if peer["throughput_per_s"]:
                print(f"jobledger / {peer['system']}: {ours / peer['throughput_per_s']:.2f}x")


if __name__ == "__main__":
    main()
