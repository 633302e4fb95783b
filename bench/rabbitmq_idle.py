"""What an idle stack costs RabbitMQ, and why: the broker's CPU over windows with
nothing of ours, with the stack up, with its processes stopped but its queues left,
and with its queues deleted.

    .venv/bin/python -m bench.rabbitmq_idle [--window-s 60]

Each window reads the broker's (``beam.smp``) user + system time from ``/proc``: 10 ms
ticks, so a 60 s window resolves about 0.17 ms a second."""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.idle import cpu_s
from bench.stack import stack


def broker_cpu_s() -> float:
    pid = subprocess.run(
        ["pgrep", "-o", "beam.smp"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    return cpu_s(int(pid))


def window(name: str, seconds: float) -> None:
    cpu, start = broker_cpu_s(), time.monotonic()
    time.sleep(seconds)
    rate = (broker_cpu_s() - cpu) * 1e3 / (time.monotonic() - start)
    print(f"{name:<36} {rate:6.2f} ms/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window-s", type=float, default=60)
    args = parser.parse_args()
    print(f"RabbitMQ's CPU, {args.window_s:g} s windows")
    window("nothing of ours", args.window_s)
    with tempfile.TemporaryDirectory() as logs, stack("bench.noop_app", Path(logs)) as s:
        for command in (["gateway"], ["dispatcher"], ["projector"]):
            s.start(*command)
        s.start("worker", "--processes", "2", "--concurrency", "8")
        s.wait_ready()
        time.sleep(20)  # every worker process connected and consuming
        window("the stack up", args.window_s)
        for process in s.processes:
            process.send_signal(signal.SIGTERM)
        for process in s.processes:
            process.wait(timeout=30)
        time.sleep(5)
        window("its queues, no processes", args.window_s)
    time.sleep(5)
    window("its queues deleted", args.window_s)


if __name__ == "__main__":
    main()
