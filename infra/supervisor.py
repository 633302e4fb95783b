"""``jobledger worker --processes N``: N worker processes, kept running.

A child that dies (a handler that kills its process, an out-of-memory kill) is
started again after a short backoff; its messages return to the queue and its lost
attempts are recorded by whichever worker receives them. SIGTERM/SIGINT are passed
to every child (a graceful stop); the supervisor exits when they all have. With a
fixed ops port P, child n answers on P + n (its replacement too), so every
process's metrics can be scraped."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from infra.errors import InfraError

log = logging.getLogger("jobledger.supervisor")
MAX_PORT = 65535


def supervise_workers(count: int, argv: list[str], ops_port: int | None = None) -> int:
    """Run ``count`` copies of ``jobledger <argv>`` (a single-process worker)."""
    if ops_port and ops_port + count - 1 > MAX_PORT:
        raise InfraError(
            f"{count} worker processes need ops ports {ops_port} to {ops_port + count - 1}, "
            f"past {MAX_PORT}: choose a lower JOBLEDGER_OBSERVABILITY__OPS_PORT"
        )
    command = [sys.executable, "-m", "infra.cli", *argv]

    def start_child(n: int) -> subprocess.Popen[bytes]:
        if not ops_port:  # none, or any free port (0): nothing to share out
            return start(command)
        return start(command, JOBLEDGER_OBSERVABILITY__OPS_PORT=str(ops_port + n))

    children = [start_child(n) for n in range(count)]
    stopping = False
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping, signals
        stopping, signals = True, signals + 1
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL if signals > 1 else signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = [0.5] * count
    while True:
        for n, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            log.warning("worker process %s exited with %s; starting another", child.pid, code)
            time.sleep(backoff[n])
            backoff[n] = min(backoff[n] * 2, 10.0)
            if not stopping:
                children[n] = start_child(n)
        if stopping and all(child.poll() is not None for child in children):
            return 0
        _until_a_child_exits()


def _until_a_child_exits() -> None:
    """Sleep until a child exits (left for ``poll`` to reap), rather than waking to
    look: a signal's handler runs meanwhile, and the wait goes on after it."""
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)


def start(command: list[str], **env: str) -> subprocess.Popen[bytes]:
    """Start one worker process: this interpreter, this program, the caller's flags."""
    return subprocess.Popen(command, env={**os.environ, **env})  # noqa: S603 - our own command line
