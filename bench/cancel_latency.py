"""Time from POST /jobs/{id}/cancel to the job being ``cancelled`` in the ledger, for a
running async, thread and process-run handler. The cancel is broadcast to workers on
the control exchange; the worker stops the handler and records ``Cancelled``.

    .venv/bin/python bench/cancel_latency.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.stack import stack

KINDS = {
    "async": ("nap", {"seconds": 30}),
    "thread": ("spin", {"seconds": 30}),
    "process": ("burn", {"seconds": 30}),
}


def wait_status(client: httpx.Client, job_id: str, wanted: str, poll_s: float = 0.005) -> float:
    while True:
        if client.get(f"/jobs/{job_id}").json()["status"] == wanted:
            return time.monotonic()
        time.sleep(poll_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logdir, stack("tests.integration.app", Path(logdir)) as s:
        s.start("run")
        s.wait_ready()
        with httpx.Client(base_url=s.url, timeout=10, headers=s.auth_headers()) as client:
            for kind, (job_type, params) in KINDS.items():
                took = []
                for _ in range(args.rounds):
                    job = client.post(
                        "/jobs", json={"type": job_type, "case_id": "bench", "params": params}
                    ).json()
                    wait_status(client, job["id"], "running")
                    time.sleep(0.2)  # let the handler get going
                    asked = time.monotonic()
                    client.post(f"/jobs/{job['id']}/cancel")
                    took.append(wait_status(client, job["id"], "cancelled") - asked)
                took_ms = sorted(1000 * t for t in took)
                print(
                    f"{kind:<8} n={len(took)} p50 {statistics.median(took_ms):7.1f} ms  "
                    f"max {took_ms[-1]:7.1f} ms",
                    flush=True,
                )


if __name__ == "__main__":
    main()
