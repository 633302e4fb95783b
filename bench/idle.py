"""What the stack costs when there is nothing to do: CPU a second of each process
(gateway, dispatcher, projector, a worker of two processes), and of PostgreSQL and
RabbitMQ over the same window, with the stack up and, for comparison, without it.

    .venv/bin/python -m bench.idle                  # 60 s windows
    .venv/bin/python -m bench.idle --window-s 30
    .venv/bin/python -m bench.idle --delay-levels 1 # RabbitMQ without most of the delay tree

The servers' figures are whole servers (other users of this machine's PostgreSQL and
RabbitMQ count too): read them as the difference between the two windows."""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.stack import stack

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def wakeups(pid: int) -> dict[str, int]:
    """Voluntary context switches so far of each thread of ``pid``, by thread name:
    how often it went to sleep, i.e. was woken."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        found[name] = found.get(name, 0) + switches
    return found


def server_pids() -> dict[str, list[int]]:
    """PostgreSQL's processes and RabbitMQ's Erlang VM (with its helpers)."""

    def pgrep(pattern: str) -> list[int]:
        out = subprocess.run(["pgrep", "-f", pattern], check=False, capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    return {
        "postgresql": pgrep("^postgres"),
        "rabbitmq": pgrep("beam.smp") + pgrep("erl_child_setup") + pgrep("epmd"),
    }


def window(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU ms a second of each group of processes over ``seconds``."""
    before = {name: sum(cpu_s(p) for p in group) for name, group in pids.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    return {
        name: 1000 * (sum(cpu_s(p) for p in group) - before[name]) / elapsed
        for name, group in pids.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window-s", type=float, default=60)
    parser.add_argument("--settle-s", type=float, default=10)
    parser.add_argument("--delay-levels", type=int, default=16, help="delay queues declared")
    args = parser.parse_args()

    quiet = window(server_pids(), args.window_s)
    with tempfile.TemporaryDirectory() as logdir, stack("bench.noop_app", Path(logdir)) as s:
        s.env["JOBLEDGER_AMQP__DELAY_LEVELS"] = str(args.delay_levels)
        s.start("gateway")
        s.start("dispatcher")
        s.start("projector")
        s.start("worker", "--processes", "2", "--concurrency", "8")
        s.wait_ready()
        time.sleep(args.settle_s)  # the worker's children are up, the topology declared
        ours = {name: [pid] for name, pid in s.pids().items()}
        switches = {name: wakeups(pid) for name, pid in s.pids().items()}
        busy = window({**ours, **server_pids()}, args.window_s)
        woken = {
            name: {
                thread: (n - switches[name].get(thread, 0)) / args.window_s
                for thread, n in wakeups(pid).items()
            }
            for name, pid in s.pids().items()
        }

    print(f"idle for {args.window_s:.0f} s, {args.delay_levels} delay levels; CPU ms a second")
    print(f"{'process':<32}{'stack up':>10}{'stack down':>12}")
    for name, figure in busy.items():
        print(f"{name:<32}{figure:>10.2f}{quiet.get(name, float('nan')):>12.2f}")
    print("\nwake-ups a second, by thread (more than 0.5)")
    for name, threads in woken.items():
        busiest = sorted(threads.items(), key=lambda t: -t[1])
        listed = ", ".join(f"{t} {n:.1f}" for t, n in busiest if n > 0.5)
        print(f"{name:<32}{sum(threads.values()):>10.1f}  {listed}")
    stack_total = sum(v for k, v in busy.items() if k in ours)
    print(f"{'jobledger processes':<32}{stack_total:>10.2f}")
    servers_added = sum(busy[k] - quiet[k] for k in quiet)
    print(f"{'servers, stack up minus down':<32}{servers_added:>10.2f}")
    print(f"{'whole stack':<32}{stack_total + servers_added:>10.2f}")


if __name__ == "__main__":
    main()
