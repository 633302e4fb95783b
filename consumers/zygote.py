"""The zygote: a process of a worker's that has imported the job modules of its
process-run job types, once, and forks a child per attempt. A child starts with
those modules in place (copy-on-write), so it runs its handler within milliseconds,
and a fresh interpreter's start-up counts neither toward its time limits nor toward
its memory cap.

The worker starts it as a fresh interpreter (``python -c BOOT``, see
consumers/process_run.py) with the worker's ``sys.path``; it imports only this
module, the job modules and the standard library. It speaks over one SOCK_SEQPACKET
socket, one pickled tuple a message:

    worker → zygote   ("start", token) and one file descriptor: the child's end of
                      its connection to the worker
                      ("signal", pid, signum): only a child still running is signalled
    zygote → worker   ("ready", {module: error}) once, after the imports
                      ("started", token, pid) or ("not started", token, error)
                      ("exited", pid, returncode) once the child is reaped

It ignores SIGINT and SIGTERM: it ends when the worker's end of the socket closes
(the worker stopped, or died), and kills the children still running as it goes.
Each child dies with it too (``PR_SET_PDEATHSIG``), so no job process outlives its
worker, even when the zygote itself is killed."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import pickle
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from consumers import child

PR_SET_PDEATHSIG = 1
MAX_MESSAGE = 4096
MAX_ERROR = 500  # of each module's import error: the "ready" message stays small


def serve(fd: int, modules: list[str]) -> None:
    """Import ``modules``, then fork a child for each request on socket ``fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control = socket.socket(fileno=fd)
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - its jobs fail with it; the rest run
            failed[name] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
    gc.freeze()  # what is imported stays shared with the children: no refcount copies
    _send(control, ("ready", failed))
    Zygote(control).serve()


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # A handler must be installed for the wake-up fd to hear of SIGCHLD.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    if not self._request():
                        self._stop()
                        return
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self._reap()

    def _request(self) -> bool:
        """Handle one message of the worker's; False once the worker has gone."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self.control, MAX_MESSAGE, 1)
        except InterruptedError:
            return True
        except OSError:
            return False
        if not data:
            return False
        message = pickle.loads(data)  # noqa: S301 - from the worker that started this process
        match message:
            case ("start", token):
                [channel] = fds
                try:
                    pid = self._fork(channel)
                except OSError as exc:
                    _send(self.control, ("not started", token, str(exc)))
                else:
                    self.children.add(pid)
                    _send(self.control, ("started", token, pid))
                finally:
                    os.close(channel)
            case ("signal", pid, signum) if pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        return True

    def _fork(self, channel: int) -> int:
        zygote = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            self.selector.close()
            self.control.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent(zygote)
            conn = Connection(channel)
            job = conn.recv()  # EOF: the worker gave up on this start
            child.run(job, conn)
            code = 0
        except BaseException:  # noqa: BLE001 - said on stderr; the exit code tells the worker
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _reap(self) -> None:
        for pid, code in reaped():
            self.children.discard(pid)
            _send(self.control, ("exited", pid, code))

    def _stop(self) -> None:
        """The worker has gone: its jobs' processes go with it."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent (the zygote) ends; if the
    zygote ended before this could be asked, end now."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _send(control: socket.socket, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError):  # the worker has gone: its EOF ends the loop
        control.send(pickle.dumps(message))


def reaped() -> Iterator[tuple[int, int]]:
    """Reap each child that has exited: its pid and exit code (-N: killed by signal N)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)
