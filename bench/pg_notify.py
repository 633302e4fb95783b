"""What a NOTIFY costs PostgreSQL for each connection that LISTENs in the database:
commits of one ``pg_notify`` each, at a steady rate, with no listener, with listeners
on the channel notified, and with listeners on another channel. PostgreSQL signals
every listening backend of the database at each commit that notifies, whichever
channel it listens on, and each signalled backend reads the queue.

    .venv/bin/python -m bench.pg_notify
    .venv/bin/python -m bench.pg_notify --listeners 3 --rate 600 --seconds 10

PostgreSQL's CPU is read from /proc (its processes, and the backends that exited, as
the postmaster's children's): other users of the server count too."""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg

from infra.settings import PostgresSettings

TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float:
    total = 0
    pids = subprocess.run(["pgrep", "-f", "^postgres"], capture_output=True, text=True, check=False)
    for pid in pids.stdout.split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICKS


def listen(conninfo: str, channel: str, stop: threading.Event, ready: threading.Barrier) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        ready.wait()
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                pass


def notify_cost_ms(conninfo: str, listeners: int, channel: str, rate: float, seconds: float) -> str:
    stop = threading.Event()
    ready = threading.Barrier(listeners + 1)
    threads = [
        threading.Thread(target=listen, args=(conninfo, channel, stop, ready))
        for _ in range(listeners)
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before, started, sent = postgres_cpu_s(), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            conn.execute("SELECT pg_notify('bench_notified', '')")
            sent += 1
            time.sleep(1 / rate)
        spent = postgres_cpu_s() - before
        elapsed = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join()
    where = "none" if not listeners else f"{listeners} on {channel}"
    return f"{where:<32}{sent / elapsed:>10.0f}{1000 * spent / sent:>16.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listeners", type=int, default=3)
    parser.add_argument("--rate", type=float, default=600, help="commits a second, one notify each")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    conninfo = PostgresSettings(dbname="jobledger").conninfo
    print(f"{'listeners':<32}{'commits/s':>10}{'PG ms a commit':>16}")
    for listeners, channel in [
        (0, "bench_notified"),
        (args.listeners, "bench_notified"),
        (args.listeners, "bench_elsewhere"),
    ] * 2:
        print(notify_cost_ms(conninfo, listeners, channel, args.rate, args.seconds), flush=True)


if __name__ == "__main__":
    main()
