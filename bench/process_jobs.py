"""How long a no-op ``run_in="process"`` job takes from ``Started`` to ``Succeeded`` (the
ledger's own timestamps, both written by the worker), next to a no-op on the loop; and
the job process's address space and resident memory when its handler starts, which
of the worker's libraries it had imported, and the memory of the worker's zygote.

    .venv/bin/python -m bench.process_jobs -n 50

Jobs go one at a time (each submitted once the last has finished) to ``jobledger run``
with ``bench.process_app``; a first job of each type warms up and is not counted.
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

from bench.stack import stack


def run_one(client: httpx.Client, job_type: str) -> tuple[float, dict[str, Any]]:
    """Submit a job, wait for it, and return its Started→Succeeded time and result."""
    job = client.post("/jobs", json={"type": job_type, "case_id": "bench", "params": {}}).json()
    while (seen := client.get(f"/jobs/{job['id']}").json())["status"] not in (
        "succeeded",
        "failed",
    ):
        time.sleep(0.005)
    if seen["status"] != "succeeded":
        raise RuntimeError(f"{job_type} {job['id']} failed: {seen.get('error')}")
    at = {
        e["type"]: datetime.fromisoformat(e["at"])
        for e in client.get(f"/jobs/{job['id']}/events").json()
    }
    return (at["Succeeded"] - at["Started"]).total_seconds(), seen.get("result") or {}


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    return (
        f"{name:<13} n={len(ms)}  Started→Succeeded p50 {statistics.median(ms):7.1f} ms  "
        f"p95 {p95:7.1f} ms  min {ms[0]:7.1f}  max {ms[-1]:7.1f}"
    )


def zygote_memory(worker_pid: int) -> str:
    """The resident and proportional (shared pages split) memory of the worker's zygote."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    for pid in children:
        if b"consumers.zygote" in Path(f"/proc/{pid}/cmdline").read_bytes():
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
            return f"zygote {pid}: resident {kb['Rss'] / 1024:.1f} MB, proportional {kb['Pss'] / 1024:.1f} MB"
    return "no zygote (each attempt spawns an interpreter)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50, help="jobs of each type")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logdir, stack("bench.process_app", Path(logdir)) as s:
        worker = s.start("run")
        s.wait_ready()
        with httpx.Client(base_url=s.url, timeout=30, headers=s.auth_headers()) as client:
            for job_type in ("noop_loop", "noop_process"):
                run_one(client, job_type)  # warm-up
                runs = [run_one(client, job_type) for _ in range(args.n)]
                print(summary(job_type, [took for took, _ in runs]), flush=True)
            facts = [result for _, result in runs]
            space = sorted(f["address_space_kb"] / 1024 for f in facts)
            rss = sorted(f["rss_kb"] / 1024 for f in facts)
            print(
                f"job process at the handler's start: address space p50 "
                f"{statistics.median(space):.1f} MB (max {space[-1]:.1f}), resident "
                f"p50 {statistics.median(rss):.1f} MB; worker libraries imported: "
                f"{sorted({name for f in facts for name in f['framework']}) or 'none'}",
                flush=True,
            )
            print(zygote_memory(worker.pid), flush=True)


if __name__ == "__main__":
    main()
