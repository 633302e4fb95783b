"""Tick accuracy of a cron schedule through the whole stack: ``jobledger run`` (which
has a scheduler) and a second ``jobledger scheduler`` process, a schedule of the
no-op job for N minutes; then, read back from the ledger over the API, the ticks
expected, fired (TickFired), the jobs the case holds (a duplicate is a job beyond one
a tick), and each tick's job's delays: tick → Submitted and tick → Started.

    .venv/bin/python -m bench.cron_ticks                 # 5 minutes of "* * * * *"
    .venv/bin/python -m bench.cron_ticks --minutes 60    # the hour
    .venv/bin/python -m bench.cron_ticks --cron "*/5 * * * * *" --minutes 2"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from application import ticks
from bench.stack import stack

CASE = "bench-cron"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--cron", default="* * * * *")
    parser.add_argument("--schedulers", type=int, default=2, help="run's own one, plus more")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logdir, stack("bench.noop_app", Path(logdir)) as s:
        s.start("run")
        for _ in range(args.schedulers - 1):
            s.start("scheduler")
        s.wait_ready()
        with httpx.Client(base_url=s.url, headers=s.auth_headers(), timeout=30) as api:
            body = {"name": "bench", "cron": args.cron, "type": "noop", "case_id": CASE}
            created = api.post("/schedules", json=body)
            created.raise_for_status()
            sid, began = created.json()["id"], datetime.now(UTC)
            time.sleep(args.minutes * 60)
            api.patch(f"/schedules/{sid}", json={"paused": True}).raise_for_status()
            ended = datetime.now(UTC)
            time.sleep(5)  # the last tick's job starts
            report(api, sid, args.cron, began, ended)


def report(api: httpx.Client, sid: str, cron: str, began: datetime, ended: datetime) -> None:
    history = api.get(f"/schedules/{sid}").json()["history"]
    # The ledger's own times: ticks after the Created and up to the Paused are due.
    began = datetime.fromisoformat(history[0]["at"])
    ended = datetime.fromisoformat(next(e["at"] for e in history if e["type"] == "Paused"))
    expected = ticks.ticks_between(cron, "UTC", began, ended)
    fired = [e for e in history if e["type"] == "TickFired"]
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/jobs/{CASE}/jobs", params=params).json()
        jobs += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    fired_ticks = [datetime.fromisoformat(e["data"]["tick"]) for e in fired]
    submit_ms, start_ms = [], []
    for event in fired:
        tick = datetime.fromisoformat(event["data"]["tick"])
        history_of_job = api.get(f"/jobs/{event['data']['job_id']}/events").json()
        times = {e["type"]: datetime.fromisoformat(e["at"]) for e in reversed(history_of_job)}
        submit_ms.append((times["Submitted"] - tick).total_seconds() * 1000)
        if "Started" in times:
            start_ms.append((times["Started"] - tick).total_seconds() * 1000)
    print(f"schedule {cron!r} for {(ended - began).total_seconds() / 60:.1f} min")
    print(f"  ticks expected        {len(expected):>8}")
    print(f"  ticks fired           {len(fired):>8}  (distinct: {len(set(fired_ticks))})")
    print(f"  missing               {len(set(expected) - set(fired_ticks)):>8}")
    print(f"  jobs in the case      {len(jobs):>8}")
    print(f"  duplicates            {len(jobs) - len(set(fired_ticks)):>8}")
    for name, values in (("tick -> Submitted", submit_ms), ("tick -> Started", start_ms)):
        print(
            f"  {name:<20}  p50 {percentile(values, 0.5):7.0f} ms  p99 "
            f"{percentile(values, 0.99):7.0f} ms  max {max(values, default=float('nan')):7.0f} ms"
            f"  (mean {statistics.fmean(values) if values else float('nan'):.0f} ms)"
        )


if __name__ == "__main__":
    main()
