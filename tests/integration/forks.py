"""Starts the tests' ``jobledger`` processes, long-running and one-shot commands
alike, by forking a process that has imported them already, instead of a new
interpreter each time.

A stack's start was about three CPU-seconds, two of them imports (FastAPI,
pydantic, psycopg, aio-pika, OpenTelemetry), and the suite starts about a hundred
stacks on two cores. Each forked process is a real process all the same: it runs
``infra.cli.main`` with the command, environment, working directory and log of
the start, its own pid, signals and exit code, and ends the way the interpreter
would (threads joined, ``atexit`` run). What it does not repeat is the import.
``TESTS_EXEC=1`` starts every process as a new interpreter instead.

The server (``python -m tests.integration.forks SOCKET``) answers one JSON line a
connection: ``start`` forks and answers the pid; ``poll`` answers a child's exit
code, or null while it runs. It exits when its stdin (the test process) closes."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from consumers.zygote import reaped

ROOT = Path(__file__).resolve().parents[2]
# What `jobledger run`, `worker`, `gateway`, `dispatcher`, `projector` and `scheduler`
# import, and the tests' job module. The listings' SQL module too: a gateway imports it
# once listening, or at its first listing; the tests' gateways do not warm up, so
# without it here the first listing a test asks for waits for the import: 1.0-1.7 s on
# an idle machine, 4.7 s beside four CPU hogs (a 10 s client timed out in one CI run).
# And of the one-shot commands, `history`: 0.45 CPU-s of imports of its own.
PRELOADED = (
    "infra.cli",
    "infra.history",
    "infra.all_in_one",
    "infra.worker_process",
    "infra.gateway_process",
    "infra.ledger_processes",
    "infra.scheduler_process",
    "infra.supervisor",
    "infra.logs",
    "infra.telemetry",
    "projections.view_queries",
    "tests.integration.app",
)


def serve(path: str) -> None:
    for module in PRELOADED:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    codes: dict[int, int] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                if not sys.stdin.buffer.read1(4096):
                    return
            elif key.fileobj is wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            else:
                conn, _ = listener.accept()
                with conn:
                    request = json.loads(conn.makefile("rb").readline())
                    if request["op"] == "start":
                        sys.stdout.flush()
                        pid = os.fork()
                        if pid == 0:
                            _child(request, [listener, conn], selector, (wake_r, wake_w))
                        codes.pop(pid, None)  # an earlier child's, if the pid came round again
                        answer: dict[str, Any] = {"pid": pid}
                    else:
                        codes.update(reaped())
                        answer = {"code": codes.get(request["pid"])}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
        codes.update(reaped())


def _child(
    request: dict[str, Any],
    sockets: list[socket.socket],
    selector: selectors.BaseSelector,
    pipe: tuple[int, int],
) -> None:
    """Become ``jobledger ARGV``: never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        selector.close()
        for sock in sockets:
            sock.close()
        for fd in pipe:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        if request.get("err"):  # stderr apart from stdout, as ``capture_output`` keeps it
            err = os.open(request["err"], os.O_WRONLY | os.O_APPEND)
            os.dup2(err, 2)
            os.close(err)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [str(ROOT / "infra" / "cli.py"), *request["argv"]]
        from infra.cli import main  # noqa: PLC0415

        code = main(request["argv"])
    except SystemExit as exc:
        if isinstance(exc.code, str):
            sys.stderr.write(f"{exc.code}\n")
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        # As the interpreter ends: join the threads left running, then the atexit hooks.
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class ForkServer:
    """The test process's end: starts the server and asks it to start commands."""

    def __init__(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="jobledger-forks-"))  # (a socket's path is short)
        self.path = str(workdir / "socket")
        self.log = workdir / "server.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.forks", self.path],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while not self.log.read_text().startswith("ready"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fork server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(self.path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer: dict[str, Any] = json.loads(sock.makefile("rb").readline())
            return answer

    def start(
        self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, err: Path | None = None
    ) -> Forked:
        """Fork ``jobledger ARGV``, its stdout (and stderr, unless ``err``) to ``log``."""
        for path in (log, err):
            if path is not None:
                path.write_bytes(b"")  # there before the start returns, as with Popen
        request = {"op": "start", "argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        if err is not None:
            request["err"] = str(err)
        answer = self._ask(request)
        return Forked(self, answer["pid"], ["jobledger", *argv])

    def run(
        self, argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run(..., capture_output=True, text=True, timeout=timeout_s)`` of
        ``jobledger ARGV``, forked: a one-shot command without an interpreter's start."""
        with tempfile.TemporaryDirectory(prefix="jobledger-run-") as workdir:
            out, err = Path(workdir) / "stdout", Path(workdir) / "stderr"
            forked = self.start(argv, env, cwd, out, err)
            try:
                code = forked.wait(timeout_s)
            except subprocess.TimeoutExpired:
                forked.kill()
                forked.wait(10)
                raise
            return subprocess.CompletedProcess(
                forked.args, code, out.read_text(errors="replace"), err.read_text(errors="replace")
            )

    def code(self, pid: int) -> int | None:
        code: int | None = self._ask({"op": "poll", "pid": pid})["code"]
        return code

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(Path(self.path).parent, ignore_errors=True)


class Forked:
    """A forked command, as much of ``subprocess.Popen`` as the tests use."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]) -> None:
        self.server = server
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.argv[1])
