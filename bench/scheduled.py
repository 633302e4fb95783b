"""How late delayed jobs start: N jobs submitted with delays spread over 1-5 s (and,
with --held, delays beyond a small delay tree, so every one is handed over by the
dispatcher's pass), then each job's lateness = its ``started_at`` - its ``run_at``,
both as the ledger recorded them. Prints p50, p99 and max, and the earliest (never
below 0: no job starts before its run_at).

    .venv/bin/python -m bench.scheduled -n 200
    .venv/bin/python -m bench.scheduled -n 200 --held     # 2 delay levels (3 s) + hand-over
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.stack import stack


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=5.0)
    parser.add_argument(
        "--held", action="store_true", help="a 3 s delay tree: 4-8 s delays are handed over"
    )
    parser.add_argument("--prefetch", type=int, help="the worker's prefetch (default: 8)")
    args = parser.parse_args()
    env: dict[str, str] = (
        {"JOBLEDGER_WORKER__PREFETCH": str(args.prefetch)} if args.prefetch else {}
    )
    low, high = args.min_s, args.max_s
    if args.held:
        env |= {
            "JOBLEDGER_AMQP__DELAY_LEVELS": "2",
            "JOBLEDGER_SCHEDULING__HAND_OVER_INTERVAL_S": "1",
        }
        low, high = 4.0, 8.0
    rng = random.Random(18)
    with tempfile.TemporaryDirectory() as logdir, stack("bench.noop_app", Path(logdir)) as s:
        s.env.update(env)
        s.start("run")
        s.wait_ready()
        with httpx.Client(base_url=s.url, timeout=30, headers=s.auth_headers()) as client:
            jobs = []
            for start in range(0, args.n, 100):
                batch = [
                    {"type": "noop", "case_id": "bench", "delay_s": rng.uniform(low, high)}
                    for _ in range(min(100, args.n - start))
                ]
                answer = client.post("/jobs/batch", json={"jobs": batch})
                answer.raise_for_status()
                jobs += answer.json()["jobs"]
            time.sleep(high)
            late: list[float] = []
            for job in jobs:
                while True:
                    got = client.get(f"/jobs/{job['id']}").json()
                    if got["status"] == "succeeded":
                        break
                    time.sleep(0.2)
                run_at = datetime.fromisoformat(got["run_at"] or job["run_at"])
                late.append((datetime.fromisoformat(got["started_at"]) - run_at).total_seconds())
    ms = [1000 * x for x in late]
    print(
        f"{len(ms)} jobs, delays {low:g}-{high:g} s{' (handed over)' if args.held else ''}: "
        f"start lateness p50 {statistics.median(ms):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
        f"max {max(ms):.0f} ms, earliest {min(ms):+.0f} ms"
    )


if __name__ == "__main__":
    main()
