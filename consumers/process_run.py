"""Process-run handlers: each attempt runs in a child process of its own, so it can be
terminated (cancel, soft time limit: SIGTERM), killed (hard time limit: SIGKILL) and
capped in memory (RLIMIT_AS). The child reports progress and its outcome over a
connection (consumers/child.py).

Children are forked by the worker's zygote (consumers/zygote.py): a process started
once per worker process, which has imported the job modules and nothing of the
worker's (no broker, ledger or telemetry), so an attempt's process starts in
milliseconds instead of importing everything again. If the zygote dies, the attempts
it was running fail (their processes die with it) and the next attempt starts a new
one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

from consumers.child import ChildJob
from consumers.registry import JobRegistry

log = logging.getLogger("jobledger.worker")

# The zygote's command line: the worker's sys.path in place of the one `-c` would
# give it (which puts the working directory first), before anything is imported.
BOOT = (
    "import sys; sys.path[:] = sys.argv[3:]; "
    "from consumers.zygote import serve; serve(int(sys.argv[1]), sys.argv[2].split(','))"
)
MAX_MESSAGE = 65536
# How long a child may take to be reaped once its connection has closed.
EXIT_WAIT_S = 5.0

__all__ = ["ChildJob", "ChildProcess", "NotStarted", "ProcessStarter", "describe_exit"]


class NotStarted(Exception):
    """The job's process could not be started."""


def job_modules(registry: JobRegistry) -> list[str]:
    """The modules a process-run attempt needs: its handler's and its retried errors'."""
    modules: set[str] = set()
    for name in registry.names():
        kind = registry.get(name)
        if kind.run_in == "process":
            modules.add(kind.handler.__module__)
            modules.update(error.__module__ for error in kind.retry_on)
    modules.discard("builtins")
    return sorted(modules)


class ProcessStarter:
    """A worker process's way to start job processes: through its zygote, started on
    first use (or by ``open``) and again if it died."""

    def __init__(self, modules: Iterable[str]) -> None:
        self.modules = sorted(set(modules))
        self._zygote: Zygote | None = None

    def open(self) -> None:
        """Start the zygote now, so the first attempt does not wait for its imports."""
        self._running()

    def _running(self) -> Zygote:
        if self._zygote is None or not self._zygote.alive:
            self._zygote = Zygote(self.modules)
        return self._zygote

    async def start(self, job: ChildJob) -> ChildProcess:
        """A running child for ``job``; raises NotStarted if there can be none."""
        zygote = self._running()
        ours, theirs = socket.socketpair()
        conn = Connection(ours.detach())
        try:
            pid, exited = await zygote.fork(theirs)
            conn.send(job)
        except BaseException as exc:
            conn.close()  # the child, if there is one, reads EOF and exits
            if isinstance(exc, Exception) and not isinstance(exc, NotStarted):
                raise NotStarted(f"could not send the job to its process: {exc!r}") from exc
            raise
        finally:
            theirs.close()
        return ChildProcess(zygote, pid, exited, conn)

    async def close(self) -> None:
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None


class Zygote:
    """The worker's end of one zygote process."""

    def __init__(self, modules: list[str]) -> None:
        self.loop = asyncio.get_running_loop()
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            fd = theirs.fileno()
            # The worker's interpreter flags (-O, -B, -X …) too, as multiprocessing passes them.
            flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
                [sys.executable, *flags, "-c", BOOT, str(fd), ",".join(modules), *sys.path],
                pass_fds=[fd],
                stdin=subprocess.DEVNULL,
            )
        self.control.setblocking(False)
        self.alive = True
        self._tokens = itertools.count()
        self._starting: dict[int, asyncio.Future[tuple[int, asyncio.Future[int | None]]]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self.loop.add_reader(self.control.fileno(), self._readable)
        log.debug("zygote %d started for %s", self.process.pid, ", ".join(modules) or "nothing")

    async def fork(self, channel: socket.socket) -> tuple[int, asyncio.Future[int | None]]:
        """Ask for a child that will talk over ``channel``: its pid, and a future of
        its exit code (None if the zygote died first and the code is unknown)."""
        if not self.alive:
            raise NotStarted("the zygote has exited")
        token = next(self._tokens)
        started: asyncio.Future[tuple[int, asyncio.Future[int | None]]]
        started = self._starting[token] = self.loop.create_future()
        try:
            socket.send_fds(self.control, [pickle.dumps(("start", token))], [channel.fileno()])
        except OSError as exc:
            del self._starting[token]
            raise NotStarted(f"could not ask the zygote for a process: {exc}") from exc
        try:
            return await started
        except asyncio.CancelledError:
            # Started meanwhile or not, that child is nobody's: it reads EOF and exits.
            self._starting.pop(token, None)
            raise

    def signal(self, pid: int, signum: int) -> None:
        """Signal child ``pid`` if it still runs: the zygote knows, having reaped the
        rest, so no other process that took its pid since can be hit."""
        if self.alive:
            with contextlib.suppress(OSError):
                self.control.send(pickle.dumps(("signal", pid, signum)))

    def _readable(self) -> None:
        try:
            data = self.control.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            return
        try:
            message = pickle.loads(data)  # noqa: S301 - from the zygote this process started
        except Exception:
            log.exception("unreadable message from the zygote %d", self.process.pid)
            return
        match message:
            case ("ready", failed):
                for module, error in failed.items():
                    log.warning("the zygote could not import %s: %s", module, error)
            case ("started", token, pid):
                exited = self._exits[pid] = self.loop.create_future()
                started = self._starting.pop(token, None)
                if started is not None and not started.done():
                    started.set_result((pid, exited))
            case ("not started", token, error):
                started = self._starting.pop(token, None)
                if started is not None and not started.done():
                    started.set_exception(NotStarted(f"the zygote could not fork: {error}"))
            case ("exited", pid, code):
                ended = self._exits.pop(pid, None)
                if ended is not None and not ended.done():
                    ended.set_result(code)

    def _gone(self) -> None:
        """The zygote has exited (or been killed): so have its children."""
        if not self.alive:
            return
        self.alive = False
        self.loop.remove_reader(self.control.fileno())
        self.control.close()
        if self.process.poll() is None:
            self.loop.run_in_executor(None, self.process.wait)
        log.warning("the zygote %d exited (code %s)", self.process.pid, self.process.returncode)
        for started in self._starting.values():
            if not started.done():
                started.set_exception(NotStarted("the zygote exited"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(None)
        self._starting.clear()
        self._exits.clear()

    async def close(self) -> None:
        """Stop the zygote: closing its socket ends it, and any child it still has."""
        if self.alive:
            self.alive = False
            self.loop.remove_reader(self.control.fileno())
            self.control.close()
        await asyncio.to_thread(self.process.wait)


class ChildProcess:
    """The worker's handle on one running child: read its messages, stop it."""

    def __init__(
        self, zygote: Zygote, pid: int, exited: asyncio.Future[int | None], conn: Connection
    ) -> None:
        self.zygote = zygote
        self.pid = pid
        self.exited = exited
        self.receive = conn
        self.messages: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._reading = True
        zygote.loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            self.messages.put_nowait(self.receive.recv())
        except (EOFError, OSError):
            self._stop_reading()
            self.messages.put_nowait(("exited",))

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.zygote.loop.remove_reader(self.receive.fileno())

    def terminate(self) -> None:
        self.zygote.signal(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        self.zygote.signal(self.pid, signal.SIGKILL)

    async def close(self) -> int | None:
        """Wait for the child to end (killing it after a while) and return its exit
        code, or None if that is unknown (its zygote died)."""
        try:
            try:
                async with asyncio.timeout(EXIT_WAIT_S):
                    return await asyncio.shield(self.exited)
            except TimeoutError:
                self.kill()
                return await self.exited
        finally:
            self._stop_reading()
            self.receive.close()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the job's process ended with its zygote (the process that forks job processes)"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"the job's process was killed by {signal.Signals(-code).name}"
    return f"the job's process exited with code {code} (pid {os.getpid()} is its worker)"
