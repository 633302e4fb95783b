"""An equal-durability peer: Dramatiq as a team would build a job history by hand.

Publisher confirms on a durable queue (``RabbitmqBroker(confirm_delivery=True)``), and
a job table written three times per job, each a durable PostgreSQL commit: the row
inserted at submit (before the message is sent), marked running when the actor
starts, marked succeeded when it returns (with the completion record the driver
counts, in the same transaction). It keeps no event history, no attempt, actor or
trace: the least a team would write for "never lost, always explainable".

Run by ``bench/throughput.py --peers`` with the peers' environment
(``bench/setup_peers.sh``); it reuses ../shared/bench/peers/common.py for the worker's
start and stop, the metrics and the output, like the peers there:

    bench/.venv/bin/python bench/peer_dramatiq_ledger.py -c 8 -n 3000 --reps 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

PEERS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers"
sys.path.insert(0, str(PEERS))

import common  # noqa: E402
import dramatiq  # noqa: E402
import psycopg  # noqa: E402
from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: E402

QUEUE = "bench_dramatiq_ledger"
JOBS_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_jobs (id bigint PRIMARY KEY, status text NOT NULL, "
    "submitted_at timestamptz NOT NULL, started_at timestamptz, finished_at timestamptz)"
)
broker = RabbitmqBroker(url=common.AMQP_URL, confirm_delivery=True)
dramatiq.set_broker(broker)
_local = threading.local()


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or getattr(_local, "pid", None) != os.getpid():
        conn = _local.conn = psycopg.connect(common.PG_DSN, autocommit=True)
        _local.pid = os.getpid()
    return conn


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(job_id: int, submitted: float) -> None:
    conn = _conn()
    conn.execute(
        "UPDATE bench_jobs SET status = 'running', started_at = now() WHERE id = %s", (job_id,)
    )
    with conn.transaction():
        conn.execute(
            "UPDATE bench_jobs SET status = 'succeeded', finished_at = now() WHERE id = %s",
            (job_id,),
        )
        conn.execute(
            "INSERT INTO bench_done (job_id, submitted, done) VALUES (%s, %s, %s)",
            (job_id, submitted, time.time()),
        )


def submit(job_id: int, submitted: float) -> None:
    _conn().execute(
        "INSERT INTO bench_jobs (id, status, submitted_at) VALUES (%s, 'queued', now())", (job_id,)
    )
    noop.send(job_id, submitted)


def one_rep(args: argparse.Namespace, reader: common.PgSinkReader, n: int, first: int) -> dict:
    reader.reset()
    with common.CpuMeter() as cpu:
        t0, t_enq = common.submit_paced(lambda i, ts: submit(first + i, ts), n, args.rate)
        common.wait_for(reader.count, n, args.timeout)
    return {**common.run_metrics(n, t0, t_enq, reader.records), **cpu.result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", "--jobs", type=int, default=5000)
    p.add_argument("-c", "--concurrency", type=int, default=8, help="total worker threads")
    p.add_argument("--processes", type=int, default=None, help="default: min(C, nproc)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--rate", type=float, default=None, help="pace submissions (jobs/s)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", help="append JSON result lines here")
    args = p.parse_args()
    procs = args.processes or max(1, min(args.concurrency, os.cpu_count() or 1))
    threads = max(1, args.concurrency // procs)

    with psycopg.connect(common.PG_DSN, autocommit=True) as conn:
        conn.execute(common.DONE_TABLE_DDL)
        conn.execute(JOBS_DDL)
        conn.execute("TRUNCATE bench_jobs")
    tmp = tempfile.mkdtemp(prefix="bench-dramatiq-ledger-")
    broker.flush(QUEUE)
    reader = common.PgSinkReader()
    here = str(Path(__file__).resolve().parent)
    cmd = [
        sys.executable,
        "-m",
        "dramatiq",
        "peer_dramatiq_ledger",
        "--path",
        here,
        "--processes",
        str(procs),
        "--threads",
        str(threads),
        "--queues",
        QUEUE,
    ]
    t_start = time.time()
    worker = common.start_worker(
        cmd, {}, "Worker process is ready for action.", procs, os.path.join(tmp, "worker.log")
    )
    try:
        first = 0
        if args.warmup:
            one_rep(args, reader, args.warmup, first)
            first += args.warmup
        runs = []
        for _ in range(args.reps):
            runs.append(one_rep(args, reader, args.jobs, first))
            first += args.jobs
        shutil.rmtree(tmp)
    finally:
        common.stop_worker(worker)
        broker.close()
    common.emit(
        {
            "bench": "dramatiq",
            "variant": "dramatiq (job table, 3 commits) +confirm",
            "pool": f"{procs}p x {threads}t",
            "concurrency": procs * threads,
            "n": args.jobs,
            "rate": args.rate,
            "reps": args.reps,
            "wall_s": round(time.time() - t_start, 1),
            "median": common.medians(runs),
            "runs": runs,
            "env": common.environment(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
