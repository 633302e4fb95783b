"""Integration tests run against the real PostgreSQL and RabbitMQ on this machine.

Isolation: each test gets its own PostgreSQL schema and its own AMQP name prefix,
both deleted afterwards (quorum queues cannot be auto-deleted, so the test deletes
them). A missing service fails the run with the command that starts it; nothing
is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aio_pika
import aiormq
import httpx
import psycopg
import pytest

from consumers.routing import Names
from domain.ledger import JobLedger
from domain.origin import Origin
from gateway.caller import SCOPES
from gateway.tokens import mint
from infra import ledger_store
from infra.settings import PostgresSettings
from tests.faults import free_port
from tests.integration.forks import Forked, ForkServer

ROOT = Path(__file__).resolve().parents[2]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "jobledger_test"}
AMQP_HOST = "127.0.0.1:5672"
MANAGEMENT = "http://127.0.0.1:15672/api"
T = TypeVar("T")
Process = subprocess.Popen[bytes] | Forked
PROGRAM = (sys.executable, "-m", "infra.cli")
TENANT = "dev"  # the tests' default caller's tenant
AUTH_SECRET = "integration-tests-hs256-secret-0123456789abcdef"


def _pg_conninfo(dbname: str) -> str:
    return f"host={PG['host']} port={PG['port']} user={PG['user']} dbname={dbname}"


def eventually(probe: Callable[[], T | None], timeout_s: float = 30.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or probe}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


@pytest.fixture(scope="session")
def postgres() -> str:
    try:
        with psycopg.connect(_pg_conninfo("postgres"), autocommit=True, connect_timeout=5) as c:
            if not c.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PG["dbname"],)
            ).fetchone():
                # Parallel test processes (pytest -n) may race to create it.
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    c.execute(f"CREATE DATABASE {PG['dbname']}")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} ({exc}). Start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            pytrace=False,
        )
    return PG["dbname"]


@pytest.fixture(scope="session")
def vhost() -> str:
    """The broker's default vhost. Each test has its own name prefix and deletes its
    queues and exchanges afterwards (see ``stack``): creating and deleting vhosts
    serialises inside the broker and stalls behind the deletion of a vhost full of
    quorum queues, which made a vhost per session the slowest part of a run."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed: RabbitMQ is missing", pytrace=False)
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=5).close()
        httpx.get(f"{MANAGEMENT}/overview", auth=("guest", "guest"), timeout=10).raise_for_status()
    except (OSError, httpx.HTTPError) as exc:
        pytest.fail(
            f"RabbitMQ (with its management plugin) is not reachable ({exc}). Start it with: "
            "scripts/services",
            pytrace=False,
        )
    return "/"


@pytest.fixture
def schema(postgres: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    _drop_schema(postgres, name)


def _drop_schema(database: str, name: str) -> None:
    with psycopg.connect(_pg_conninfo(database), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def pg(postgres: str, schema: str) -> PostgresSettings:
    """The settings of this test's own schema, for opening stores in the test."""
    settings = PostgresSettings(dbname=postgres, schema=schema)
    ledger_store.ensure_database(settings)
    return settings


@pytest.fixture(autouse=True)
def _stores_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every ledger and view a test opens is closed after it: their pools would
    otherwise hold their connections for the rest of the run, and four test
    processes share one PostgreSQL of 100 connections with the stacks they start."""
    opened: list[Callable[[], None]] = []
    open_ledger, open_view = ledger_store.open_ledger, ledger_store.open_view

    def opening_ledger(*args: Any, **kwargs: Any) -> JobLedger:
        ledger = open_ledger(*args, **kwargs)
        opened.append(ledger.close)
        return ledger

    def opening_view(*args: Any, **kwargs: Any) -> Any:
        view = open_view(*args, **kwargs)
        opened.append(view.datastore.close)
        return view

    monkeypatch.setattr(ledger_store, "open_ledger", opening_ledger)
    monkeypatch.setattr(ledger_store, "open_view", opening_view)
    yield
    for close in reversed(opened):
        with contextlib.suppress(Exception):
            close()


LEDGER_ORIGIN = Origin(actor="test", correlation_id="c-1")


def submit_to_ledger(ledger: JobLedger, n: int, *, max_attempts: int = 1) -> uuid.UUID:
    """An echo job submitted straight into the ledger, on one of three cases."""
    job_id = uuid.uuid4()
    ledger.submit_job(
        job_id=job_id,
        tenant="t1",
        case_id=f"case-{n % 3}",
        job_type="echo",
        params={"n": n},
        pool="default",
        max_attempts=max_attempts,
        origin=LEDGER_ORIGIN,
    )
    return job_id


@dataclass
class Stack:
    """The system's processes, started with one set of settings."""

    env: dict[str, str]
    url: str
    forks: ForkServer | None = None  # starts the processes, if there is one
    processes: list[Process] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def cli(
        self, *args: str, timeout_s: float = 60, without: tuple[str, ...] = (), **overrides: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``jobledger ARGS`` to its end with the stack's settings, less the
        variables named in ``without``, plus ``overrides``: forked from the session's
        fork server if there is one, as ``start`` does: a new interpreter's imports
        were one to two CPU-seconds a command, and the suite runs several dozen."""
        env = {k: v for k, v in self.env.items() if k not in without}
        if self.forks is not None:
            return self.forks.run(list(args), {**env, **overrides}, ROOT, timeout_s)
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *args],
            cwd=ROOT,
            env={**env, **overrides},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def start(
        self,
        *command: str,
        cwd: Path = ROOT,
        program: tuple[str, ...] = PROGRAM,
        **overrides: str,
    ) -> Process:
        """Start ``jobledger COMMAND`` with the stack's settings plus ``overrides``,
        forked from the session's fork server if there is one (``forks.py``);
        ``program`` and ``cwd`` run it as a user would (the installed ``jobledger``,
        whose path lacks the working directory that ``python -m`` puts on it)."""
        env = {**self.env, **overrides}
        log_path = Path(env["JOBLEDGER_TEST_LOGDIR"]) / f"{len(self.logs)}-{command[0]}.log"
        process: Process
        if self.forks is not None and program == PROGRAM and cwd == ROOT:
            process = self.forks.start(list(command), env, cwd, log_path)
        else:
            with log_path.open("wb") as log:  # the child keeps its own handle
                process = subprocess.Popen(
                    [*program, *command],
                    cwd=cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        self.processes.append(process)
        self.logs.append(log_path)
        return process

    def token(
        self,
        tenant: str = TENANT,
        subject: str = "tester",
        scopes: tuple[str, ...] = SCOPES,
        ttl_s: float = 300,
        secret: str | None = None,
        **claims: Any,
    ) -> str:
        """A token for any tenant, subject, scopes or expiry (negative: already expired),
        signed with the gateway's key unless ``secret`` says otherwise."""
        key = secret if secret is not None else self.env["JOBLEDGER_AUTH__SECRET"]
        return mint(key, tenant=tenant, subject=subject, scopes=scopes, ttl_s=ttl_s, **claims)

    def auth_headers(self, **token: Any) -> dict[str, str]:
        """The headers that identify the tests' default caller (all scopes), or the
        caller ``token`` describes (see ``token``)."""
        return {"Authorization": f"Bearer {self.token(**token)}"}

    def client(self, **token: Any) -> httpx.Client:
        """An HTTP client of the gateway, as the default caller or as ``token`` says."""
        return httpx.Client(base_url=self.url, timeout=10, headers=self.auth_headers(**token))

    def wait_ready(self) -> None:
        def up() -> bool:
            self.check_alive()
            try:
                # (/openapi.json would build the schema: a fifth of a CPU-second a stack)
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(up, 60, "the gateway to answer")

    def check_alive(self) -> None:
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                pytest.fail(
                    f"{process.args} exited {process.returncode}:\n{log.read_text()[-3000:]}"
                )

    def stop(self, process: Process, sig: int = signal.SIGTERM) -> int:
        process.send_signal(sig)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR2)  # its threads' stacks, into its log
            time.sleep(2)
            pytest.fail(_killed_hanging(process, self.logs[self.processes.index(process)], 60))

    def stop_all(self) -> None:
        """SIGTERM to each process still running; one that has not exited 30 s later
        is killed and fails the test (a stop must not hang, even under load)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        hung = []
        for process, log in zip(self.processes, self.logs, strict=True):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                hung.append(_killed_hanging(process, log, 30))
        if hung:
            pytest.fail("\n\n".join(hung))


def _killed_hanging(process: Process, log: Path, waited_s: float) -> str:
    """Kill a process that did not stop; say so, with the tasks its stop watchdog
    logged as still waited for, then the end of its log."""
    process.kill()
    process.wait()
    text = log.read_text()
    waits = "\n".join(line for line in text.splitlines() if "still waits" in line)
    return f"{process.args} did not stop within {waited_s:.0f} s:\n{waits}\n{text[-8000:]}"


@pytest.fixture
def stack_env(postgres: str, vhost: str, schema: str, tmp_path: Path) -> dict[str, str]:
    return _stack_env(postgres, vhost, schema, tmp_path)


def _stack_env(postgres: str, vhost: str, schema: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLEDGER_")}
    env.update(
        JOBLEDGER_APP="tests.integration.app",
        JOBLEDGER_POSTGRES__DBNAME=postgres,
        JOBLEDGER_POSTGRES__SCHEMA=schema,
        JOBLEDGER_AMQP__URL=f"amqp://guest:guest@{AMQP_HOST}/{quote(vhost, safe='')}",
        JOBLEDGER_AMQP__PREFIX=f"t{uuid.uuid4().hex[:8]}",
        # Six delay levels (up to 63 s) instead of sixteen: fewer quorum queues per test.
        JOBLEDGER_AMQP__DELAY_LEVELS="6",
        # Four test processes start stacks at once against one PostgreSQL of 100
        # connections: a smaller overflow per pool (a full pool waits; it does not fail).
        JOBLEDGER_POSTGRES__MAX_OVERFLOW="4",
        JOBLEDGER_WORKER__HEARTBEAT_TTL_S="4",
        JOBLEDGER_WORKER__HEARTBEAT_INTERVAL_S="1",
        JOBLEDGER_GATEWAY__PORT=str(free_port()),
        JOBLEDGER_GATEWAY__DEV_TENANT=TENANT,
        # A second of CPU a gateway start, for the dashboard's first listing.
        JOBLEDGER_GATEWAY__WARM_UP="false",
        JOBLEDGER_AUTH__ENVIRONMENT="development",
        JOBLEDGER_AUTH__SECRET=AUTH_SECRET,
        JOBLEDGER_TEST_LOGDIR=str(tmp_path),
        PYTHONPATH=str(ROOT),
    )
    return env


def delete_broker_objects(vhost: str, prefix: str) -> None:
    """Delete this test's queues and exchanges (quorum queues cannot auto-delete;
    deleting them here keeps the session's vhost small and its deletion quick)."""
    auth = ("guest", "guest")
    v = quote(vhost, safe="")
    with httpx.Client(auth=auth, timeout=60) as client:
        for kind in ("queues", "exchanges"):
            # The API filters by name only when asked for a page: without one it
            # lists everything in the vhost.
            listed = client.get(
                f"{MANAGEMENT}/{kind}/{v}",
                params={
                    "name": f"^{prefix}\\.",
                    "use_regex": "true",
                    "page": "1",
                    "page_size": "500",
                },
            )
            listed.raise_for_status()
            for item in listed.json()["items"]:
                if not item["name"].startswith(f"{prefix}."):
                    continue
                client.delete(f"{MANAGEMENT}/{kind}/{v}/{quote(item['name'], safe='')}")


@pytest.fixture(scope="session")
def forks() -> Iterator[ForkServer | None]:
    """The test process's fork server (``forks.py``), or None with ``TESTS_EXEC=1``:
    every process a new interpreter."""
    if os.environ.get("TESTS_EXEC") == "1":
        yield None
        return
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def stack(stack_env: dict[str, str], vhost: str, forks: ForkServer | None) -> Iterator[Stack]:
    """An empty stack: tests start the processes they need."""
    s = Stack(
        env=stack_env,
        url=f"http://127.0.0.1:{stack_env['JOBLEDGER_GATEWAY__PORT']}",
        forks=forks,
    )
    yield s
    try:
        s.stop_all()
    finally:
        delete_broker_objects(vhost, stack_env["JOBLEDGER_AMQP__PREFIX"])


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Every process in one (``jobledger run``), ready: the test's own, or in a module
    marked ``shared_stack`` the module's (``shared_running``), checked alive after each
    test."""
    if request.node.get_closest_marker("shared_stack") is not None:
        shared: Stack = request.getfixturevalue("shared_running")
        yield shared
        shared.check_alive()
        return
    stack: Stack = request.getfixturevalue("stack")
    stack.start("run")
    stack.wait_ready()
    yield stack


@pytest.fixture(scope="module")
def shared_running(
    postgres: str, vhost: str, tmp_path_factory: pytest.TempPathFactory, forks: ForkServer | None
) -> Iterator[Stack]:
    """One ``jobledger run`` for a module's tests, in a schema and name prefix of its own.
    A module opts in (``pytestmark = pytest.mark.shared_stack``) when each of its tests
    that takes ``running`` keeps to jobs, cases and tenants of its own and stops no
    process: a stack's start is a few CPU-seconds, most of what such a test costs."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = _stack_env(postgres, vhost, schema, tmp_path_factory.mktemp("shared"))
    s = Stack(env=env, url=f"http://127.0.0.1:{env['JOBLEDGER_GATEWAY__PORT']}", forks=forks)
    try:
        s.start("run")
        s.wait_ready()
        yield s
    finally:
        try:
            s.stop_all()
        finally:
            delete_broker_objects(vhost, env["JOBLEDGER_AMQP__PREFIX"])
            _drop_schema(postgres, schema)


TERMINAL = {"succeeded", "failed", "cancelled"}


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: set[str] = TERMINAL, timeout_s: float = 30
) -> dict[str, Any]:
    def status() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return eventually(status, timeout_s, f"job {job_id} to be {statuses}")


def submit(
    client: httpx.Client, job_type: str, params: dict[str, Any], case_id: str = "case-1"
) -> dict[str, Any]:
    response = client.post("/jobs", json={"type": job_type, "case_id": case_id, "params": params})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def consumer_count(stack: Stack, pool: str = "default") -> int:
    """How many consumers the pool's work queue has (workers that are ready)."""
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])

    async def count() -> int:
        connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(names.work_queue(pool), passive=True)
            return queue.declaration_result.consumer_count or 0

    return asyncio.run(count())


def declared_consumer_count(stack: Stack, pool: str = "default") -> int:
    """``consumer_count``, once the pool's work queue is declared: the gateway answers
    before the other processes of a stack have declared the queues."""

    def counted() -> list[int] | None:
        try:
            return [consumer_count(stack, pool)]
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None

    return eventually(counted, 30, f"the queue of pool {pool!r} to be declared")[0]


def start_workers(stack: Stack, *args: str, count: int = 1, **env: str) -> list[Any]:
    """Start a control plane without a worker on the default pool, then ``count``
    worker processes on it, and wait until they all consume."""
    if not stack.processes:
        stack.start("run", JOBLEDGER_WORKER__POOL="elsewhere")
        stack.wait_ready()
    before = declared_consumer_count(stack)
    workers = [stack.start("worker", *args, **env) for _ in range(count)]
    eventually(lambda: consumer_count(stack) >= before + count, 60, "the workers to consume")
    return workers


def kill_the_worker(stack: Stack, worker: Process) -> None:
    """SIGKILL the pool's only worker and wait until the broker has dropped its
    consumer, so the next ``start_workers`` counts from zero, not from a ghost."""
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    eventually(lambda: consumer_count(stack) == 0, 30, "the broker to drop the dead consumer")
