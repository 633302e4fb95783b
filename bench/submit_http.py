"""Submits over HTTP: one client, 32 at once, and batches; the jobs accepted a second
and the gateway's CPU per job.

    .venv/bin/python -m bench.submit_http                   # gateway alone
    .venv/bin/python -m bench.submit_http --stack           # with dispatcher, projector, 2x8 workers
    .venv/bin/python -m bench.submit_http --gateway-processes 2   # jobledger gateway --processes 2

Every figure is taken with every submission in the ledger (group commit, one
transaction a batch); quotas are off for the run, unless --quotas counts them
against bounds no run reaches. The requests come from
bench/http_load.py: keep-alive connections on one event loop, cheap enough that the
two cores go to the gateway and PostgreSQL, not to the client."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import http_load
from bench.stack import stack

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """The CPU seconds of the process and of its children that are running."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return (int(fields[11]) + int(fields[12])) / TICKS + sum(cpu_s(int(c)) for c in children)


def job(n: int) -> dict[str, Any]:
    return {"type": "noop", "case_id": f"case-{n % 100}", "params": {}}


def singles(url: str, headers: dict[str, str], total: int, clients: int) -> float:
    """Seconds for ``total`` POST /jobs from ``clients`` at once."""
    seconds, statuses, _ = http_load.post(
        url, "/jobs", lambda n: json.dumps(job(n)).encode(), headers, total, clients
    )
    if set(statuses) != {202}:
        raise RuntimeError(f"submits refused: {dict(statuses)}")
    return seconds


def batches(url: str, headers: dict[str, str], total: int, size: int, clients: int) -> float:
    body = json.dumps({"jobs": [job(n) for n in range(size)]}).encode()
    seconds, statuses, _ = http_load.post(
        url, "/jobs/batch", lambda _: body, headers, total // size, clients
    )
    if set(statuses) != {202}:
        raise RuntimeError(f"batches refused: {dict(statuses)}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", action="store_true", help="run the other processes too")
    parser.add_argument("-n", type=int, default=960, help="single submits per row")
    parser.add_argument("--batched", type=int, default=20000, help="jobs in batches")
    parser.add_argument("--gateway-processes", type=int, default=1, help="gateway processes")
    parser.add_argument("--quotas", action="store_true", help="count quotas (bounds not reached)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs, stack("bench.noop_app", Path(logs)) as s:
        # Off, or on with bounds no run reaches (what counting them costs).
        s.env["JOBLEDGER_QUOTA__SUBMITS_PER_S"] = "1000000" if args.quotas else "0"
        s.env["JOBLEDGER_QUOTA__BURST"] = "1000000"
        s.env["JOBLEDGER_QUOTA__MAX_WAITING"] = "1000000000" if args.quotas else "0"
        gateway = s.start("gateway", "--processes", str(args.gateway_processes))
        if args.stack:
            s.start("dispatcher")
            s.start("projector")
            s.start("worker", "--processes", "2", "--concurrency", "8")
        s.wait_ready()
        headers = s.auth_headers()
        singles(s.url, headers, 64 * args.gateway_processes, 8)  # warm up
        print(f"{'how':<28} {'jobs':>7} {'jobs/s':>9} {'gateway CPU/job':>16}")
        rows = [
            ("POST /jobs, 1 client", lambda: singles(s.url, headers, args.n // 3, 1), args.n // 3),
            ("POST /jobs, 32 clients", lambda: singles(s.url, headers, args.n, 32), args.n),
            (
                "POST /jobs/batch of 1000, 1",
                lambda: batches(s.url, headers, args.batched, 1000, 1),
                args.batched,
            ),
            (
                "POST /jobs/batch of 1000, 4",
                lambda: batches(s.url, headers, args.batched, 1000, 4),
                args.batched,
            ),
        ]
        for name, run, jobs in rows:
            before = cpu_s(gateway.pid)
            seconds = run()
            used = cpu_s(gateway.pid) - before
            print(f"{name:<28} {jobs:>7} {jobs / seconds:>9.1f} {used / jobs * 1e3:>13.2f} ms")


if __name__ == "__main__":
    main()
