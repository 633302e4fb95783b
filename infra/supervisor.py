"""``jobledger worker --processes N`` and ``jobledger gateway --processes N``: N
processes, kept running.

A child that dies (a handler that kills its process, an out-of-memory kill) is
started again after a short backoff. A worker's messages return to the queue and its
lost attempts are recorded by whichever worker receives them; a gateway's listening
socket is the supervisor's, so the connections waiting on it are taken by the other
gateway processes meanwhile. SIGTERM/SIGINT are passed to every child (a graceful
stop); the supervisor exits when they all have. With a fixed ops port P, child n
answers on P + n (its replacement too), so every process's metrics can be scraped."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from infra import shared_quotas
from infra.errors import InfraError

log = logging.getLogger("jobledger.supervisor")
MAX_PORT = 65535
# The descriptor of the listening socket, in a gateway process the supervisor started.
SOCKET_FD_ENV = "JOBLEDGER_GATEWAY_SOCKET_FD"


def supervise_gateway(
    count: int, argv: list[str], host: str, port: int, ops_port: int | None = None
) -> int:
    """Run ``count`` gateway processes on one port, and one quota table, shared.

    Each process n has a listening socket of its own, bound here with SO_REUSEPORT
    and handed to it (and to its replacement): the kernel spreads new connections
    over the sockets. One socket shared by every process would not spread them: the
    event loop that wakes first accepts every connection waiting. A socket outlives
    its process, so the connections sent to it while its process is replaced wait
    in it, and are served by the replacement rather than refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            listening = socket.socket(family, socket.SOCK_STREAM)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((host, port))
            port = listening.getsockname()[1]  # for port 0: the one the first was given
            listening.listen(2048)
            listening.set_inheritable(True)
            sockets.append(listening)
    except OSError as exc:
        raise InfraError(f"the gateway cannot listen on {host}:{port}: {exc}") from exc
    quotas = shared_quotas.create()
    log.info("gateway: %s processes on http://%s:%s", count, host, port)

    def handed(n: int) -> tuple[Sequence[int], dict[str, str]]:
        fd = sockets[n].fileno()
        return (fd, quotas), {SOCKET_FD_ENV: str(fd), shared_quotas.FD_ENV: str(quotas)}

    return supervise(count, argv, ops_port, kind="gateway", handed=handed)


def supervise(
    count: int,
    argv: list[str],
    ops_port: int | None = None,
    *,
    kind: str = "worker",
    handed: Callable[[int], tuple[Sequence[int], dict[str, str]]] | None = None,
) -> int:
    """Run ``count`` copies of ``jobledger <argv>`` (a single process of ``kind``);
    ``handed(n)`` gives process n (and its replacements) descriptors to inherit and
    the environment that names them."""
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
            log.warning("%s process %s exited with %s; starting another", kind, child.pid, code)
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


def start(command: list[str], pass_fds: Sequence[int] = (), **env: str) -> subprocess.Popen[bytes]:
    """Start one process: this interpreter, this program, the caller's flags."""
    return subprocess.Popen(  # noqa: S603 - our own command line
        command, env={**os.environ, **env}, pass_fds=tuple(pass_fds)
    )
