"""Stops a jobledger process just as its broker connect completes, many times, and
counts the stops it held.

A TCP proxy between the process and RabbitMQ watches the broker's frames for
Connection.OpenOk, the reply that completes the connect. It sends SIGTERM to the
process within a few milliseconds of forwarding that frame, before or after it (a
sweep of offsets), and times how long the process takes to exit. Before
infra/kept_cancels.py, a stop whose cancel aio-pika's connection task lost was held
for that task's 5 s reconnect interval
(tests/integration/test_stop_races.py has the story).

    .venv/bin/python -m bench.stop_race --trials 200 [--command dispatcher|worker|run]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.faults import AmqpConnectProxy, free_port, sigterm_at_open_ok

ROOT = Path.cwd()
HELD_S = 3.0


def trial(
    proxy: AmqpConnectProxy, command: str, env: dict[str, str], offset_s: float, log: Path
) -> float | None:
    """Seconds from SIGTERM to exit, or None if the process never connected."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from infra.cli import main; sys.exit(main())",
            command,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    sent_at: list[float] = []
    proxy.at_open_ok = sigterm_at_open_ok([process.pid], -offset_s, sent_at)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if not sent_at:
            process.kill()
            process.wait()
            return None
        process.wait(timeout=30)
    return time.monotonic() - sent_at[0] if sent_at else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--spread-ms", type=float, default=2.0)
    parser.add_argument("--command", default="dispatcher", help="the process to stop")
    args = parser.parse_args()
    proxy = AmqpConnectProxy()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLEDGER_")}
    env |= {
        "JOBLEDGER_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        "JOBLEDGER_AMQP__PREFIX": "stoprace",
        "JOBLEDGER_POSTGRES__DBNAME": "jobledger_stoprace",
        "JOBLEDGER_AUTH__ENVIRONMENT": "development",  # `run` serves HTTP: a dev key
        "JOBLEDGER_GATEWAY__PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    logs = Path(tempfile.mkdtemp(prefix="stop_race."))
    rng = random.Random(1)
    times: list[float] = []
    held: list[tuple[float, float]] = []
    for _ in range(args.trials):
        offset = rng.uniform(-args.spread_ms, args.spread_ms) / 1000
        log = logs / f"{len(times)}.log"
        took = trial(proxy, args.command, env, offset, log)
        if took is None:
            continue
        times.append(took)
        if took > HELD_S:
            held.append((offset * 1000, took, log))
        else:
            log.unlink()
    times.sort()
    print(
        f"code: {subprocess.check_output(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, text=True).strip()}"
    )
    print(f"stops: {len(times)}; held over {HELD_S:.0f} s: {len(held)}")
    if times:
        print(
            f"exit after SIGTERM: p50 {times[len(times) // 2] * 1000:.0f} ms, "
            f"max {times[-1] * 1000:.0f} ms"
        )
    for offset_ms, took, log in held:
        print(
            f"  held: signal at {offset_ms:+.2f} ms from the OpenOk, exited after {took:.1f} s"
            f" ({log})"
        )


if __name__ == "__main__":
    main()
