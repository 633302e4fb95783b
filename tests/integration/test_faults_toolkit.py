"""The fault-injection toolkit (tests/faults.py) against real, private servers: a
PostgreSQL cluster and a RabbitMQ node of the tests' own, never the shared ones."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import aiormq
import httpx
import psycopg
import pytest

from tests.faults import FaultsError, PrivatePostgres, PrivateRabbit, TcpProxy, scratch_dir

SHARED_PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _until(probe: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _shared_rabbit_status() -> tuple[str, str]:
    """(node name, OS pid) of the shared node, from a read-only ``rabbitmqctl -q status``."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "status"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    node = re.search(r"Node name: (\S+)", out)
    pid = re.search(r"OS PID: (\d+)", out)
    assert node and pid, out
    return node.group(1), pid.group(1)


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    root = scratch_dir("faults-pg-")
    try:
        try:
            server = PrivatePostgres(root)
        except FaultsError as exc:
            pytest.fail(f"cannot run a private PostgreSQL: {exc}", pytrace=False)
        with server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_rabbit() -> tuple[str, str]:
    """The shared node's (name, OS pid) before the private node starts."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmq-server/rabbitmqctl are not installed", pytrace=False)
    return _shared_rabbit_status()


@pytest.fixture(scope="module")
def rabbit(shared_rabbit: tuple[str, str]) -> Iterator[PrivateRabbit]:
    """One private node for the module: a node takes seconds to start and to stop."""
    root = scratch_dir("faults-rabbit-")
    try:
        with PrivateRabbit(root) as node:
            yield node
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_private_postgres_recovers_from_kill_and_leaves_the_shared_server_alone(
    pg: PrivatePostgres,
) -> None:
    with psycopg.connect(SHARED_PG, autocommit=True) as shared:
        shared_start = shared.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert pg.port != 5432
        with psycopg.connect(pg.dsn()) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")

        pg.kill()
        assert not pg.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn(), connect_timeout=2).close()

        pg.start()
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
        log = (pg.root / "postgres.log").read_text()
        assert "automatic recovery in progress" in log  # a crash, not a clean stop

        assert shared.execute("SELECT pg_postmaster_start_time()").fetchone() == shared_start


@pytest.mark.parametrize("pipeline", [False, True], ids=["simple-query", "extended-query"])
def test_cut_after_commit_loses_the_reply_but_not_the_commit(
    pg: PrivatePostgres, pipeline: bool
) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as direct:
        direct.execute("CREATE TABLE t (x int)")
    with TcpProxy("127.0.0.1", pg.port) as proxy:
        proxied = pg.dsn().replace(f"port={pg.port}", f"port={proxy.port}")
        proxy.cut_after_commit(1)
        conn = psycopg.connect(proxied)
        try:
            assert proxy.connections == 1
            with pytest.raises(psycopg.OperationalError):
                if pipeline:  # COMMIT goes out as Parse/Bind/Execute
                    with conn.pipeline():
                        conn.execute("INSERT INTO t VALUES (1)")
                        conn.commit()
                else:  # COMMIT goes out as a simple Query message
                    conn.execute("INSERT INTO t VALUES (1)")
                    conn.commit()
        finally:
            conn.close()
        assert proxy.commits_cut == 1
        assert _until(lambda: proxy.connections == 0)
        with psycopg.connect(pg.dsn()) as direct:
            assert direct.execute("SELECT x FROM t").fetchall() == [(1,)]

        with psycopg.connect(proxied) as again:  # disarmed: commits go through
            again.execute("INSERT INTO t VALUES (2)")
            again.commit()
            assert again.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
        assert proxy.commits_cut == 1


def test_cut_after_commit_loses_the_reply_of_an_autocommit_write_but_not_the_write(
    pg: PrivatePostgres,
) -> None:
    """In autocommit a statement commits at its end: with ``writing`` naming it, its
    reply is the one lost; statements in a transaction block wait for their COMMIT."""
    with psycopg.connect(pg.dsn(), autocommit=True) as direct:
        direct.execute("CREATE TABLE t (x int)")
    with TcpProxy("127.0.0.1", pg.port) as proxy:
        proxied = pg.dsn().replace(f"port={pg.port}", f"port={proxy.port}")
        proxy.cut_after_commit(1, writing=b"insert into t")
        with psycopg.connect(proxied) as conn:  # a block: its COMMIT is the cut one
            conn.execute("INSERT INTO t VALUES (0)")
            conn.execute("SELECT 1")
            assert proxy.commits_cut == 0
            with pytest.raises(psycopg.OperationalError):
                conn.commit()
        assert proxy.commits_cut == 1
        proxy.cut_after_commit(1, writing=b"insert into t")
        with (
            psycopg.connect(proxied, autocommit=True) as conn,
            pytest.raises(psycopg.OperationalError),
        ):
            conn.execute("INSERT INTO t VALUES (1)", prepare=True)
        assert proxy.commits_cut == 2
        with psycopg.connect(pg.dsn()) as direct:
            assert direct.execute("SELECT x FROM t ORDER BY x").fetchall() == [(0,), (1,)]


def test_private_rabbit_runs_beside_the_shared_node(
    rabbit: PrivateRabbit, shared_rabbit: tuple[str, str]
) -> None:
    assert rabbit.node != shared_rabbit[0]
    assert rabbit.amqp_port != 5672
    overview = httpx.get(f"{rabbit.management_url}/api/overview", timeout=10).json()
    assert overview["node"] == rabbit.node

    rabbit.stop_app()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rabbit.amqp_port), timeout=2).close()
    rabbit.start_app()
    socket.create_connection(("127.0.0.1", rabbit.amqp_port), timeout=2).close()

    assert _shared_rabbit_status() == shared_rabbit


async def test_cut_all_drops_an_amqp_connection(rabbit: PrivateRabbit) -> None:
    with TcpProxy("127.0.0.1", rabbit.amqp_port) as proxy:
        url = rabbit.url.replace(f":{rabbit.amqp_port}/", f":{proxy.port}/")
        connection = await aio_pika.connect(url, timeout=10)
        lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def on_close(_: object, exc: BaseException | None) -> None:
            if not lost.done():
                lost.set_result(exc)

        connection.close_callbacks.add(on_close)
        try:
            channel = await connection.channel()
            await channel.declare_queue(exclusive=True)
            assert proxy.connections == 1
            proxy.cut_all()
            reason = await asyncio.wait_for(lost, 10)
            assert isinstance(reason, aiormq.exceptions.AMQPConnectionError)
            assert "reset" in str(reason)  # an RST, not a clean close
            assert not connection.connected.is_set()
            assert proxy.connections == 0
            with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
                await channel.declare_queue(exclusive=True)
        finally:
            await connection.close()


def test_killed_rabbit_node_starts_again(
    rabbit: PrivateRabbit, shared_rabbit: tuple[str, str]
) -> None:
    pid = rabbit.pid
    assert pid is not None
    rabbit.kill()
    assert not _running(pid)
    assert not rabbit.registered()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rabbit.amqp_port), timeout=2).close()
    rabbit.start()
    assert rabbit.pid not in (None, pid)
    socket.create_connection(("127.0.0.1", rabbit.amqp_port), timeout=2).close()
    assert _shared_rabbit_status() == shared_rabbit
