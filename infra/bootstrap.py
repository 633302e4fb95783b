"""The composition root's shared part: what every process builds from Settings.

Each process has its own small module (infra/worker_process.py, gateway_process.py,
ledger_processes.py, all_in_one.py), so that a worker imports no HTTP server and the
gateway no worker. Every process declares the schema and the broker topology it
needs at start, idempotently; it waits for a database or a broker that is not up
yet, and restarts a component that lost one (resuming from its tracked position)
instead of exiting."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TypeVar

import aio_pika
import psycopg
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from eventsourcing.persistence import InterfaceError, OperationalError

from consumers.registry import JobRegistry
from consumers.routing import Names, pool_names
from domain.ledger import JobLedger
from domain.retry import RetryPolicy
from infra import ledger_store, topology
from infra.amqp_writes import GatheredWrites
from infra.errors import BrokerUnavailable, ConfigurationError, StoreUnavailable
from infra.kept_cancels import cancel_and_wait
from infra.settings import Settings

log = logging.getLogger("jobledger")
T = TypeVar("T")

# A component that ran this long before failing was healthy: its next restart waits
# the shortest backoff again, so it resumes as soon as what it lost is back.
HEALTHY_RUN_S = 5.0
MAX_BACKOFF_S = 2.0
# A supervised run still going this long after its cancel swallowed it (a library
# caught the CancelledError and went on): it is cancelled again, and again, so a stop
# ends. Longer than any run's own cleanup (the dispatcher's last record: 5 s).
CANCEL_AGAIN_S = 8.0
# What PostgreSQL raises while it is down, restarting or out of connections.
STORE_DOWN = (StoreUnavailable, psycopg.OperationalError, OperationalError, InterfaceError)


def load_registry(app: str) -> JobRegistry:
    """The JobRegistry named by ``module`` or ``module:attribute``. A module in the
    working directory is found, as ``celery -A`` finds one: the installed ``jobledger``
    command does not have the directory on its path, as ``python -m`` does. It is
    appended, so a file there never shadows what jobledger itself imports."""
    module_name, _, attribute = app.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the zygote of process jobs is given it too
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import job app {module_name!r}: {exc}") from exc
    if attribute:
        registry = getattr(module, attribute, None)
    else:
        registry = next((v for v in vars(module).values() if isinstance(v, JobRegistry)), None)
    if not isinstance(registry, JobRegistry):
        raise ConfigurationError(f"{app!r} does not name a JobRegistry")
    return registry


def names_of(settings: Settings) -> Names:
    return Names(settings.amqp.prefix, settings.amqp.delay_levels)


def pools_of(settings: Settings, registry: JobRegistry) -> list[str]:
    """Every pool there is: the worker's own and each job type's."""
    return sorted(set(served_pools(settings)) | {registry.get(n).pool for n in registry.names()})


def served_pools(settings: Settings) -> list[str]:
    """The pools a ``jobledger worker`` consumes: ``--pool a,b`` names several."""
    return pool_names(settings.worker.pool)


def retry_policy(settings: Settings) -> RetryPolicy:
    r = settings.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        base_delay_s=r.base_delay_s,
        factor=r.factor,
        max_delay_s=r.max_delay_s,
    )


class StoppedStarting(Exception):
    """The process was told to stop before it reached what it was starting on."""


async def unless_stopped(awaitable: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """``awaitable``'s result, or None if ``stopping`` is set first: it is cancelled then,
    so a stop never waits out a connect's timeout."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        stop.cancel()
    if task.done():
        return task.result()
    await cancel_and_wait(task)
    return None


async def connect_broker(settings: Settings) -> AbstractRobustConnection:
    """A robust connection. Failed or cancelled, the attempt is closed: left open, its
    reconnection task would go on connecting on its own, and hold the process's exit."""
    connection = aio_pika.RobustConnection(make_url(settings.amqp.url))
    # Each turn of the loop's frames in one send (infra/amqp_writes.py); reconnects too.
    connection.kwargs["transport_factory"] = GatheredWrites()
    try:
        await connection.connect(timeout=10)
    except BaseException as exc:
        await connection.close()
        if isinstance(exc, OSError | aio_pika.exceptions.AMQPConnectionError):
            raise BrokerUnavailable(
                f"RabbitMQ at {settings.amqp.url.rsplit('@', 1)[-1]} is unreachable ({exc!r}). "
                "Start it with: rabbitmq-server -detached"
            ) from exc
        raise
    return connection


async def wait_for_broker(settings: Settings, stopping: asyncio.Event) -> None:
    """Return once the broker accepts connections (a worker started while RabbitMQ is
    down, or restarting, waits for it instead of exiting), or once stopping."""
    backoff = 0.5
    while not stopping.is_set():
        try:
            connection = await unless_stopped(connect_broker(settings), stopping)
        except BrokerUnavailable as exc:
            log.warning("%s; retrying in %.1fs", exc, backoff)
            await _wait(stopping, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        else:
            if connection is not None:
                await connection.close()
            return


@contextlib.asynccontextmanager
async def broker(
    settings: Settings, registry: JobRegistry, stopping: asyncio.Event | None = None
) -> AsyncIterator[AbstractRobustConnection]:
    """A connection, with the topology declared. Given ``stopping``, a stop while it
    connects or declares raises StoppedStarting at once."""

    async def connected() -> AbstractRobustConnection:
        connection = await connect_broker(settings)
        try:
            async with connection.channel() as channel:
                await topology.declare(
                    channel,
                    names_of(settings),
                    pools_of(settings, registry),
                    settings.amqp.delivery_limit,
                )
        except BaseException:
            await connection.close()
            raise
        return connection

    if stopping is None:
        connection = await connected()
    else:
        reached = await unless_stopped(connected(), stopping)
        if reached is None:
            raise StoppedStarting("stopped before the broker was reached")
        connection = reached
    try:
        yield connection
    finally:
        await connection.close()


async def when_store_is_up(
    settings: Settings, stopping: asyncio.Event, open_: Callable[[], T], what: str
) -> T | None:
    """``open_()`` (in a thread), retried while PostgreSQL is down, restarting or out of
    connections: a process started before its database waits for it. None if the
    process is stopped meanwhile."""
    backoff = 0.5
    while not stopping.is_set():
        try:
            return await asyncio.to_thread(open_)
        except STORE_DOWN as exc:
            where = f"{settings.postgres.host}:{settings.postgres.port}"
            log.warning(
                "cannot open %s: PostgreSQL at %s: %s; retrying in %.1fs",
                what,
                where,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                backoff,
            )
            await _wait(stopping, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
    return None


async def open_ledger(
    settings: Settings, stopping: asyncio.Event, *, fastforward: bool = True
) -> JobLedger | None:
    """The ledger (its database and schema created if missing), once PostgreSQL is up."""

    def open_() -> JobLedger:
        ledger_store.ensure_database(settings.postgres)
        return ledger_store.open_ledger(settings.postgres, settings.ledger, fastforward=fastforward)

    return await when_store_is_up(settings, stopping, open_, "the ledger")


async def supervise(
    name: str,
    run: Callable[[], Coroutine[None, None, None]],
    stopping: asyncio.Event,
    *,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = MAX_BACKOFF_S,
    healthy_run_s: float = HEALTHY_RUN_S,
    cancel_again_s: float = CANCEL_AGAIN_S,
) -> None:
    """Run ``run`` until stopping; if it fails, log it and start it again, after a
    backoff that grows while it keeps failing and starts over once it has run well.
    Stopping cancels it, again every ``cancel_again_s`` while it still runs."""
    backoff = first_backoff_s
    while not stopping.is_set():
        began = time.monotonic()
        task = asyncio.create_task(run(), name=name)
        stop = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            while not (await asyncio.wait({task}, timeout=cancel_again_s))[0]:
                log.warning(
                    "%s still runs %.0fs after its cancel: cancelling it again",
                    name,
                    cancel_again_s,
                )
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            stop.cancel()
            return
        stop.cancel()
        if stopping.is_set():
            return
        if time.monotonic() - began >= healthy_run_s:
            backoff = first_backoff_s
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        log.error("%s stopped (%r); restarting in %.1fs", name, exc, backoff)
        await _wait(stopping, backoff)
        backoff = min(backoff * 2, max_backoff_s)


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
