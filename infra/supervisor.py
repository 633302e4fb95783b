"""``jobledger worker --processes N`` and ``jobledger gateway --processes N``: N
processes, kept running.

A child that dies (a handler that kills its process, an out-of-memory kill) is
started again after a backoff (half a second, doubling to 10 s while children keep
dying young; back to half a second once one has run a minute). A worker's messages
return to the queue and its lost attempts are recorded by whichever worker receives
them. A gateway process's listening sockets are also the supervisor's
(infra/gateway_sockets.py): the connections sent to them while the process is
replaced wait for its replacement. SIGTERM/SIGINT are passed to every child (a
graceful stop), and the supervisor lets go of the sockets, so new connections are
refused rather than left waiting on a process that is stopping; it exits when every
child has. With a fixed ops port P, child n answers on P + n (its replacement too),
so every process's metrics can be scraped."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from infra import gateway_sockets, shared_quotas
from infra.errors import InfraError

log = logging.getLogger("jobledger.supervisor")
_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
MAX_PORT = 65535
# A child that ran this long before it died starts again after the shortest backoff.
RAN_WELL_S = 60.0


def supervise_gateway(
    count: int, argv: list[str], host: str, port: int, ops_port: int | None = None
) -> int:
    """Run ``count`` gateway processes on one port, and one quota table, shared
    (infra/shared_quotas.py)."""
    sockets = gateway_sockets.bind(count, host, port)
    quotas = shared_quotas.create()
    log.info("gateway: %s processes on port %s", count, sockets[0][0].getsockname()[1])

    def handed(n: int) -> tuple[Sequence[int], dict[str, str]]:
        fds, named = gateway_sockets.handed(sockets[n])
        return (*fds, quotas), {
            gateway_sockets.FDS_ENV: named,
            shared_quotas.FD_ENV: shared_quotas.SharedQuotaBook.handed(quotas),
        }

    def let_go() -> None:
        for own in sockets:
            for listening in own:
                listening.close()

    return supervise(count, argv, ops_port, kind="gateway", handed=handed, stopping=let_go)


def supervise(
    count: int,
    argv: list[str],
    ops_port: int | None = None,
    *,
    kind: str = "worker",
    handed: Callable[[int], tuple[Sequence[int], dict[str, str]]] | None = None,
    stopping: Callable[[], None] | None = None,
) -> int:
    """Run ``count`` copies of ``jobledger <argv>`` (a single process of ``kind``);
    ``handed(n)`` gives process n (and its replacements) descriptors to inherit and
    the environment that names them; ``stopping`` is called once, when a stop is
    asked for."""
    if ops_port and ops_port + count - 1 > MAX_PORT:
        raise InfraError(
            f"{count} {kind} processes need ops ports {ops_port} to {ops_port + count - 1}, "
            f"past {MAX_PORT}: choose a lower JOBLEDGER_OBSERVABILITY__OPS_PORT"
        )
    command = [sys.executable, "-m", "infra.cli", *argv]

    def start_child(n: int) -> subprocess.Popen[bytes]:
        fds, env = handed(n) if handed is not None else ((), {})
        if ops_port:  # not for none, or any free port (0): nothing to share out
            env["JOBLEDGER_OBSERVABILITY__OPS_PORT"] = str(ops_port + n)
        return start(command, fds, **env)

    children = [start_child(n) for n in range(count)]
    started = [time.monotonic()] * count
    stop = False
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop, signals
        stop, signals = True, signals + 1
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL if signals > 1 else signum)
        if signals == 1 and stopping is not None:
            stopping()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = [0.5] * count
    while True:
        for n, child in enumerate(children):
            code = child.poll()
            if code is None or stop:
                continue
            log.warning("%s process %s exited with %s; starting another", kind, child.pid, code)
            if time.monotonic() - started[n] >= RAN_WELL_S:
                backoff[n] = 0.5
            time.sleep(backoff[n])
            backoff[n] = min(backoff[n] * 2, 10.0)
            try:
                if not stop:
                    children[n] = start_child(n)
                    started[n] = time.monotonic()
            except (OSError, ValueError):
                if not stop:
                    raise  # else the stop let go of what it was to be handed
        if stop and all(child.poll() is not None for child in children):
            return 0
        _until_a_child_exits()


def _until_a_child_exits() -> None:
    """Sleep until a child exits (left for ``poll`` to reap), rather than waking to
    look: a signal's handler runs meanwhile, and the wait goes on after it."""
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)


def start(command: list[str], pass_fds: Sequence[int] = (), **env: str) -> subprocess.Popen[bytes]:
    """Start one process: this interpreter, this program, the caller's flags. It is
    sent SIGTERM (a graceful stop) if the supervisor dies: killed, the supervisor
    would otherwise leave its children running, unsupervised, holding the gateway's
    port or consuming beside the processes of a supervisor started again."""
    supervisor = os.getpid()

    def stopped_with_the_supervisor() -> None:  # in the child, before it runs the command
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != supervisor:  # it died before that was asked
            os._exit(1)

    return subprocess.Popen(  # noqa: S603 - our own command line
        command,
        env={**os.environ, **env},
        pass_fds=tuple(pass_fds),
        preexec_fn=stopped_with_the_supervisor,  # noqa: PLW1509 - the supervisor has one thread
    )
