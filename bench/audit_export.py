"""The audit export's rate and the gateway's memory while it streams: N jobs submitted
in batches (one Submitted event each), then `GET /audit/events` read to the end.

    .venv/bin/python -m bench.audit_export -n 200000

Prints events/s and the gateway's resident memory before and at its peak during the
export (sampled every 50 ms): flat memory is the point."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.stack import stack


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200_000, help="events in the ledger")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs, stack("bench.noop_app", Path(logs)) as s:
        s.env["JOBLEDGER_QUOTA__SUBMITS_PER_S"] = "0"
        s.env["JOBLEDGER_QUOTA__MAX_WAITING"] = "0"
        gateway = s.start("gateway")
        s.start("projector")  # the export finds each event's job in the view
        s.wait_ready()
        headers = s.auth_headers()
        with httpx.Client(base_url=s.url, headers=headers, timeout=120) as client:
            began = time.perf_counter()
            for b in range(args.n // 1000):
                jobs = [{"type": "noop", "case_id": f"case-{b}", "params": {}}] * 1000
                client.post("/jobs/batch", json={"jobs": jobs}).raise_for_status()
            print(f"submitted {args.n} jobs in {time.perf_counter() - began:.1f} s")
            while client.get("/readyz").json().get("projector_lag", 0):
                time.sleep(0.5)
            time.sleep(3)  # the projector catches up
            before = rss_mb(gateway.pid)
            peak = before
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_mb(gateway.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            lines = 0
            began = time.perf_counter()
            with client.stream("GET", "/audit/events") as response:
                response.raise_for_status()
                for _ in response.iter_lines():
                    lines += 1
            seconds = time.perf_counter() - began
            done.set()
            sampler.join()
        print(f"exported {lines} events in {seconds:.1f} s: {lines / seconds:,.0f} events/s")
        print(f"gateway RSS: {before:.0f} MB before, {peak:.0f} MB at the peak of the export")


if __name__ == "__main__":
    main()
