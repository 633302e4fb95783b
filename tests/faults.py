"""Fault injection on servers of the test's OWN: a private PostgreSQL cluster, a private
RabbitMQ node, and a TCP proxy that cuts connections on command.

The shared PostgreSQL (127.0.0.1:5432) and RabbitMQ node (rabbit@localhost) are never
touched: pg_ctl always gets the private data directory, rabbitmqctl always ``-n <private
node>``, and a process is killed only by a pid its own server reports, checked in /proc.

As root, initdb/pg_ctl run as the OS user ``postgres``, and RabbitMQ's wrapper runs the
node and rabbitmqctl as ``rabbitmq`` (HOME /var/lib/rabbitmq, so both nodes share that
Erlang cookie; /root/.erlang.cookie plays no part). A server's root is chowned to that
user, and every directory above it must be traversable by others: pytest's tmp_path
(under a 0700 directory) is not, use ``scratch_dir()`` and delete it afterwards.

Measured here (2 CPUs, shared): PrivatePostgres initdb + start ~1.2-1.5 s, start of an
existing cluster or restart ~0.25 s, kill ~1.2-2 s (waiting for init to reap the
postmaster); PrivateRabbit start ~5-6.5 s, stop_app ~5.6 s, start_app ~2 s, kill ~0.6 s,
stop ~6.7 s (5 s of it inside the broker, stopping the management plugin's statistics).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Self

import psycopg

StopMode = Literal["smart", "fast", "immediate"]


class FaultsError(RuntimeError):
    """A private server could not be set up, started, stopped or killed."""


# Ports handed out for servers to bind later: below Linux's ephemeral range (32768 and
# up), so no outgoing connection takes one meanwhile, and a slice for each process of
# a parallel test run (pytest -n: PYTEST_XDIST_WORKER is gw0, gw1, ...), so two runs
# beside each other do not draw the same one.
PORTS_FROM, PORTS_PER_PROCESS = 20000, 1500


def _free_ports(count: int) -> list[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    n = int(worker[2:]) if worker[2:].isdigit() else 8
    low = PORTS_FROM + (n % 8) * PORTS_PER_PROCESS
    ports: list[int] = []
    for port in random.sample(range(low, low + PORTS_PER_PROCESS), PORTS_PER_PROCESS):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise FaultsError(f"no {count} free ports in {low}..{low + PORTS_PER_PROCESS}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that no outgoing
    connection or parallel test process will take before it is bound."""
    return _free_ports(1)[0]


def scratch_dir(prefix: str = "faults-") -> Path:
    """A new directory under /tmp, reachable by the postgres and rabbitmq users (servers'
    roots may be made inside it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def _run(argv: list[str], timeout: float = 120.0, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd="/tmp"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaultsError(f"{shlex.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        out = (done.stderr or done.stdout)[-2000:]
        raise FaultsError(f"{shlex.join(argv)} exited {done.returncode}: {out}")
    return done.stdout


def _give_to(root: Path, user: str) -> None:
    for parent in root.parents:
        if not parent.stat().st_mode & 0o001:
            raise FaultsError(f"{parent} is not traversable by others: {user} cannot reach it")
    if os.geteuid() == 0:
        for entry in [root, *root.iterdir()]:
            shutil.chown(entry, user, user)


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ...; [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"], ["X"])


def _until(probe: Callable[[], object], timeout: float, failure: str = "") -> bool:
    """Poll ``probe`` until true; past ``timeout``, raise ``failure`` or return False."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            if failure:
                raise FaultsError(failure)
            return False
        time.sleep(0.05)
    return True


class _Server:
    """``with server:`` starts it, and on exit ALWAYS stops it (kills it if that fails)."""

    def start(self) -> None: ...
    def _stop_for_exit(self) -> None: ...
    def kill(self) -> None: ...

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._stop_for_exit()
        except Exception:
            self.kill()


class PrivatePostgres(_Server):
    """A cluster in ``root/data`` on 127.0.0.1:``port``; socket and postgres.log in root."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        bins = [b for b in Path("/usr/lib/postgresql").glob("*/bin") if (b / "pg_ctl").exists()]
        if not bins:
            raise FaultsError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin = max(bins, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.port = port or free_port()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def _as_postgres(self, tool: str, *args: str) -> str:
        argv = [str(self.bin / tool), "-D", str(self.data), *args]
        return _run(["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv)

    def pid(self) -> int | None:
        """The postmaster's pid, if it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        return pid if comm == "postgres" and _alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to(self.root, "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._as_postgres("initdb", "-U", "postgres", "--auth=trust", "--no-sync")
        if self.is_running():
            return
        opts = f"-p {self.port} -k {shlex.quote(str(self.root))} "
        opts += "-c listen_addresses=127.0.0.1 -c max_connections=200"
        log = str(self.root / "postgres.log")
        self._as_postgres("pg_ctl", "start", "-w", "-t", "120", "-o", opts, "-l", log)
        _until(self._accepts, 30.0, f"{self.dsn()} does not accept connections")

    def _accepts(self) -> bool:
        try:
            psycopg.connect(self.dsn(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, mode: StopMode = "fast") -> None:
        if self.is_running():
            self._as_postgres("pg_ctl", "stop", "-w", "-t", "60", "-m", mode)

    def restart(self, mode: StopMode = "fast") -> None:
        self.stop(mode)
        self.start()

    def _stop_for_exit(self) -> None:
        self.stop("immediate")

    def kill(self) -> None:
        """SIGKILL the postmaster; its backends exit on their own (any left after 5 s are
        killed too). The next start() runs crash recovery."""
        pid = self.pid()
        if pid is None:
            return
        children = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")]
        children = [c for c in children if _stat(c)[1:2] == [str(pid)]]
        os.kill(pid, signal.SIGKILL)
        if not _until(lambda: not any(map(_alive, children)), 5.0):
            for child in filter(_alive, children):
                os.kill(child, signal.SIGKILL)
        # A new postmaster will not start while the old pid exists, even as a zombie
        # (init reaps it, every ~2 s on this machine).
        _until(
            lambda: not any(map(_alive, children)) and not Path(f"/proc/{pid}").exists(),
            30.0,
            f"postgres processes of {self.data} outlived SIGKILL",
        )


class PrivateRabbit(_Server):
    """A RabbitMQ node ``<name>@localhost``, management plugin on, beside the shared node;
    ``name`` defaults to ``faults<random hex>``, ports to free ones."""

    def __init__(
        self,
        root: Path,
        name: str | None = None,
        amqp_port: int | None = None,
        dist_port: int | None = None,
        management_port: int | None = None,
    ) -> None:
        if not (shutil.which("rabbitmq-server") and shutil.which("rabbitmqctl")):
            raise FaultsError("rabbitmq-server/rabbitmqctl are not installed")
        self.name = name or f"faults{secrets.token_hex(4)}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name) or self.name == "rabbit":
            raise FaultsError(f"refusing node name {self.name!r}")
        self.node = f"{self.name}@localhost"
        self.root = Path(root).resolve()
        ports = _free_ports(3)
        self.amqp_port = amqp_port or ports[0]
        self.dist_port = dist_port or ports[1]
        self.management_port = management_port or ports[2]
        self.pid: int | None = None  # the VM's, noted at start

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def ctl(self, *args: str, timeout: float = 150.0) -> str:
        """rabbitmqctl for this node only (``-n``); its stdout."""
        env = {**os.environ, "RABBITMQ_NODENAME": self.node}
        return _run(["rabbitmqctl", "-n", self.node, *args], timeout, env)

    def registered(self) -> bool:
        """Whether epmd lists this node (its VM runs)."""
        names = _run(["epmd", "-names"], 10)
        return re.search(rf"^name {re.escape(self.name)} at port", names, re.M) is not None

    def start(self) -> None:
        if self.registered():
            raise FaultsError(f"{self.node} is already running")
        (self.root / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        (self.root / "plugins").write_text("[rabbitmq_management].\n")
        (self.root / "rabbitmq.conf").write_text(
            f"management.tcp.port = {self.management_port}\nmanagement.tcp.ip = 127.0.0.1\n"
            "loopback_users = none\n"
        )
        _give_to(self.root, "rabbitmq")
        (self.root / "mnesia" / f"{self.node}.pid").unlink(missing_ok=True)
        settings = {
            "NODENAME": self.node,
            "NODE_IP_ADDRESS": "127.0.0.1",
            "NODE_PORT": str(self.amqp_port),
            "DIST_PORT": str(self.dist_port),
            "MNESIA_BASE": str(self.root / "mnesia"),
            "LOG_BASE": str(self.root / "log"),
            "ENABLED_PLUGINS_FILE": str(self.root / "plugins"),
            "CONFIG_FILE": str(self.root / "rabbitmq"),
            "ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
        }
        env = {**os.environ, **{f"RABBITMQ_{k}": v for k, v in settings.items()}}
        _run(["rabbitmq-server", "-detached"], 60, env)
        # await_startup fails at once while epmd does not know the node yet
        _until(self.registered, 120.0, f"{self.node} did not start; see {self.root / 'log'}")
        self.ctl("await_startup", "--timeout", "120")
        self.pid = self.beam_pid()

    def beam_pid(self, timeout: float = 30.0) -> int:
        """The VM's OS pid, as the node itself reports it, checked in /proc."""
        pid = int(self.ctl("eval", "os:getpid().", timeout=timeout).strip().strip('"'))
        if not self._is_ours(pid):
            raise FaultsError(f"pid {pid} is not the VM of {self.node}")
        return pid

    def _is_ours(self, pid: int) -> bool:
        try:  # the node name is not on the VM's command line, but in its environment
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return _alive(pid) and f"RABBITMQ_NODENAME={self.node}".encode() in env

    def stop(self) -> None:
        if self.registered():
            self.ctl("stop")
        self._await_down(self.pid, 30.0)

    def _await_down(self, pid: int | None, timeout: float) -> None:
        _until(  # after the VM, epmd forgets the node a little later
            lambda: not (pid and _alive(pid)) and not self.registered(),
            timeout,
            f"{self.node} (pid {pid}) is still up",
        )
        self.pid = None

    def _stop_for_exit(self) -> None:
        self.stop()

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "120")

    def kill(self) -> None:
        """SIGKILL the node's VM: the pid it reports, or if it does not answer, the one it
        reported at start (the shared node's pid can be neither)."""
        try:
            pid = self.beam_pid(15.0)
        except (FaultsError, ValueError):
            if self.pid is None or not self._is_ours(self.pid):
                return
            pid = self.pid
        os.kill(pid, signal.SIGKILL)
        self._await_down(pid, 10.0)


_SSL_OR_GSS_REQUEST = (80877103, 80877104)
_KEEP = 512  # payload bytes of a message kept for inspection


class _PgStream:
    """Splits one direction of a PostgreSQL connection into messages: (type, first bytes
    of the payload); the untyped startup packets have type 0. A stream that does not look
    like the protocol (e.g. AMQP) turns the parser off (``opaque``)."""

    def __init__(self, startup: bool) -> None:
        self.startup, self.opaque = startup, False
        self._head, self._body, self._left = bytearray(), bytearray(), -1

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        done: list[tuple[int, bytes]] = []
        i = 0
        while i < len(data) and not self.opaque:
            if self._left < 0:  # reading a header: [type byte] + 4-byte length
                size = 4 if self.startup else 5
                take = min(size - len(self._head), len(data) - i)
                self._head += data[i : i + take]
                i += take
                if len(self._head) < size:
                    break
                length = int.from_bytes(self._head[-4:], "big")
                if not 4 <= length <= (10_000 if self.startup else 1 << 30):
                    self.opaque = True
                    break
                self._left, self._body = length - 4, bytearray()
            take = min(self._left, len(data) - i)
            self._body += data[i : i + max(0, min(take, _KEEP - len(self._body)))]
            i += take
            self._left -= take
            if self._left == 0:
                done.append((0 if self.startup else self._head[0], bytes(self._body)))
                code = int.from_bytes(self._body[:4], "big")
                self.startup = self.startup and code in _SSL_OR_GSS_REQUEST
                self._head, self._left = bytearray(), -1
        return done


def _is_commit(kind: int, payload: bytes) -> bool:
    """A simple Query, or a Parse (statement name, query), whose SQL begins with COMMIT."""
    if kind not in (ord("Q"), ord("P")):
        return False
    sql = [*payload.split(b"\0", 2), b""][0 if kind == ord("Q") else 1]
    return sql.strip().upper().startswith(b"COMMIT")


def _runs(link: _Link, kind: int, payload: bytes) -> bytes | None:
    """The SQL a simple Query or a Bind (of a statement parsed earlier) runs."""
    if kind == ord("Q"):
        return payload[:_KEEP]
    if kind == ord("B"):
        return link.statements.get([*payload.split(b"\0", 2), b"", b""][1], b"")
    return None


class _Link:
    """One proxied connection: the client's socket and the server's."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.doomed = self.cut = self.closed = False
        self.syncs = self.readies = self.cut_after = 0  # ReadyForQuery owed / received
        self.statements: dict[bytes, bytes] = {}  # prepared statement name -> its SQL
        self.wrote = b""  # the SQL of the open transaction, as far as the filter cares
        self.in_block = False  # between a BEGIN and its COMMIT or ROLLBACK
        self.timer: threading.Timer | None = None  # the cut of a doomed link, at the latest
        self._lock = threading.Lock()

    def close(self, reset: bool) -> bool:
        """Close both sockets (``reset``: with an RST); False if already closed."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        if self.timer:
            self.timer.cancel()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)  # wakes the thread blocked in recv()
            sock.close()
        return True


class TcpProxy:
    """A thread-based TCP proxy from 127.0.0.1:``port`` to ``target_host:target_port``.
    ``cut_all()`` resets every connection; ``cut_after_commit()`` lets a PostgreSQL COMMIT
    through, drops the server's reply and resets that connection. The proxy itself answers
    SSLRequest/GSSENCRequest with 'N' to keep the stream readable (so sslmode=require
    clients cannot pass)."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = int(self._listener.getsockname()[1])
        self.commits_cut = 0
        self.grace_s = 5.0  # longest wait for the server's reply to a doomed COMMIT
        self._armed = 0
        self._writing: bytes | None = None
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        self.cut_all()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    def cut_all(self) -> None:
        """Reset every open connection, both sides."""
        with self._lock:
            links = list(self._links)
        for link in links:
            self._drop(link, reset=True)

    def cut_after_commit(self, count: int = 1, *, writing: bytes | None = None) -> None:
        """Arm for the next ``count`` COMMITs: each reaches the server, its reply never
        reaches the client, whose connection is reset (an ambiguous commit). With
        ``writing``, only the COMMIT of a transaction that ran a statement containing
        those bytes (e.g. ``b"INSERT INTO"`` plus a table's name: prepared statements
        are followed from their Parse to each Bind), or such a statement run outside a
        transaction block (in autocommit, its own end is its commit)."""
        with self._lock:
            self._armed, self._writing = count, writing

    def _drop(self, link: _Link, reset: bool) -> bool:
        with self._lock:
            self._links.discard(link)
        return link.close(reset)

    def _accept(self) -> None:
        while True:
            try:
                client = self._listener.accept()[0]
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.add(link)
            for up in (True, False):
                threading.Thread(target=self._pump, args=(link, up), daemon=True).start()

    def _pump(self, link: _Link, up: bool) -> None:
        src, dst = (link.client, link.server) if up else (link.server, link.client)
        stream = _PgStream(startup=up)
        while True:
            try:
                data: bytes | None = src.recv(65536)
            except OSError:
                data = None
            if not data:  # EOF: close cleanly; an error or a doomed link: reset
                self._drop(link, reset=data is None or link.doomed)
                return
            messages, to = ([] if stream.opaque else stream.feed(data)), dst
            if up and stream.startup and messages:  # SSLRequest/GSSENCRequest: refused
                data, to = b"N", src
            elif up:
                self._watch_client(link, messages)
            else:
                link.readies += sum(kind == ord("Z") for kind, _ in messages)
                if link.doomed and link.readies > link.cut_after:  # the COMMIT's answer
                    self._cut_doomed(link)
                    return
                if link.doomed:  # replies from the COMMIT on never reach the client
                    continue
            try:
                to.sendall(data)
            except OSError:
                self._drop(link, reset=True)
                return

    def _watch_client(self, link: _Link, messages: list[tuple[int, bytes]]) -> None:
        """Dooms the link at an armed COMMIT, before it is forwarded: the server's answer
        to it is the ReadyForQuery after those owed for the startup packet and for each
        earlier Query or Sync."""
        for kind, payload in messages:
            self._follow_statements(link, kind, payload)
            sql = (_runs(link, kind, payload) or b"").strip().upper()
            if sql.startswith((b"BEGIN", b"START TRANSACTION")):
                link.in_block = True
            elif sql.startswith((b"COMMIT", b"ROLLBACK", b"END", b"ABORT")):
                link.in_block = False
            committing = _is_commit(kind, payload)
            if not committing and not link.in_block and self._writing and sql:
                committing = self._writing.upper() in sql  # in autocommit: commits at its end
                if committing:
                    link.wrote = sql
            if not link.doomed and committing:
                wrote, link.wrote = link.wrote.upper(), b""
                with self._lock:
                    wanted = self._writing is None or self._writing.upper() in wrote
                    fire = self._armed > 0 and wanted
                    self._armed -= fire
                if fire:
                    link.cut_after, link.doomed = link.syncs, True
                    link.timer = threading.Timer(self.grace_s, self._cut_doomed, (link,))
                    link.timer.daemon = True
                    link.timer.start()
            link.syncs += kind in (0, ord("Q"), ord("S"))

    @staticmethod
    def _follow_statements(link: _Link, kind: int, payload: bytes) -> None:
        """Remember the SQL the open transaction ran: a simple Query's text, a Parse's
        (by its statement name), a Bind's statement's."""
        if kind == ord("Q"):
            link.wrote = (link.wrote + payload[:_KEEP])[-_KEEP * 8 :]
        elif kind == ord("P"):
            name, sql = [*payload.split(b"\0", 2), b""][:2]
            link.statements[name] = sql
        elif kind == ord("B"):
            statement = [*payload.split(b"\0", 2), b"", b""][1]
            link.wrote = (link.wrote + link.statements.get(statement, b""))[-_KEEP * 8 :]

    def _cut_doomed(self, link: _Link) -> None:
        with self._lock:  # counted before the client can notice the cut
            fire, link.cut = not (link.closed or link.cut), True
            self.commits_cut += fire
        if fire:
            self._drop(link, reset=True)


def spin(seconds: float) -> None:
    """Wait ``seconds`` without sleeping: a sleep of a fraction of a millisecond takes
    what the scheduler gives it, a spin what it is asked."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def sigterm_at_open_ok(
    pids: list[int], before_s: float, sent_at: list[float]
) -> Callable[[Callable[[], None]], None]:
    """A hook for ``AmqpConnectProxy.at_open_ok``: at the first OpenOk, SIGTERM to the
    connecting process (its pid in ``pids``, appended once it is started) ``before_s``
    before the frame goes on, or ``-before_s`` after it; when it was sent, in
    ``sent_at``."""

    def sigterm() -> None:
        os.kill(pids[0], signal.SIGTERM)
        sent_at.append(time.monotonic())

    def at_open_ok(forward: Callable[[], None]) -> None:
        if sent_at:
            forward()
            return
        while not pids:  # the connect outran the start's reply: a moment
            time.sleep(0.001)
        if before_s >= 0:
            sigterm()
            spin(before_s)
            forward()
        else:
            forward()
            spin(-before_s)
            sigterm()

    return at_open_ok


class AmqpConnectProxy:
    """A TCP proxy to RabbitMQ that hands the broker's Connection.OpenOk, the reply that
    completes a client's connect, to ``at_open_ok(forward)`` instead of forwarding it:
    the hook decides what happens around ``forward()`` (a signal to the client a moment
    before or after it, say). Every other frame, and any OpenOk while the hook is None,
    goes straight on."""

    OPEN_OK = struct.pack(">BH", 1, 0), struct.pack(">HH", 10, 41)  # method frame, channel 0

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672) -> None:
        self.target = (target_host, target_port)
        self.at_open_ok: Callable[[Callable[[], None]], None] | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client = self._listener.accept()[0]
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        self._close(client, server)

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        """The broker's bytes, frame by frame (type, channel, size, payload, end)."""
        pending = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                pending += data
                while len(pending) >= 7:
                    size = struct.unpack(">I", pending[3:7])[0]
                    if len(pending) < size + 8:
                        break
                    frame, pending = pending[: size + 8], pending[size + 8 :]
                    hook = self.at_open_ok
                    if hook is not None and (frame[:3], frame[7:11]) == self.OPEN_OK:
                        hook(lambda frame=frame: client.sendall(frame))
                    else:
                        client.sendall(frame)
        self._close(server, client)
