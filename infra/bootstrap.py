"""The composition root: builds each process from Settings and runs it until asked
to stop. Every process declares the schema and the broker topology it needs at
start, idempotently, and restarts a component that lost its database or broker
(resuming from its tracked position) instead of exiting."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from functools import partial

import aio_pika
import uvicorn
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI

from consumers.dispatcher import DISPATCHED_TOPICS, Dispatcher
from consumers.messages import Messages
from consumers.registry import JobRegistry
from consumers.routing import Names
from consumers.worker import Worker, WorkerOptions
from domain.ledger import JobLedger
from domain.retry import RetryPolicy
from gateway.app import create_app
from gateway.ops import LiveWorker, Ops
from gateway.services import Services
from gateway.sse import Streams
from gateway.tokens import bearer_identify
from infra import auth, ledger_store, telemetry, topology
from infra.dead_letters import ManagementDeadLetters
from infra.errors import BrokerUnavailable, ConfigurationError
from infra.follower import LedgerFollower
from infra.gauges import QueueDepths, observe_projector_lag
from infra.health import probes
from infra.settings import Settings
from infra.streams import feed_hub, open_streams
from projections.runner import Projector

log = logging.getLogger("jobledger")


def load_registry(app: str) -> JobRegistry:
    """The JobRegistry named by ``module`` or ``module:attribute``."""
    module_name, _, attribute = app.partition(":")
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
    return sorted({settings.worker.pool} | {registry.get(n).pool for n in registry.names()})


async def connect_broker(settings: Settings) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(settings.amqp.url, timeout=10)
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
        raise BrokerUnavailable(
            f"RabbitMQ at {settings.amqp.url.rsplit('@', 1)[-1]} is unreachable ({exc}). "
            "Start it with: rabbitmq-server -detached"
        ) from exc


async def wait_for_broker(settings: Settings, stopping: asyncio.Event) -> None:
    """Return once the broker accepts connections (a worker started while RabbitMQ is
    down, or restarting, waits for it instead of exiting)."""
    backoff = 0.5
    while not stopping.is_set():
        try:
            connection = await connect_broker(settings)
        except BrokerUnavailable as exc:
            log.warning("%s; retrying in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
        else:
            await connection.close()
            return


@contextlib.asynccontextmanager
async def broker(
    settings: Settings, registry: JobRegistry
) -> AsyncIterator[AbstractRobustConnection]:
    """A connection, with the topology declared."""
    connection = await connect_broker(settings)
    try:
        async with connection.channel() as channel:
            await topology.declare(
                channel,
                names_of(settings),
                pools_of(settings, registry),
                settings.amqp.delivery_limit,
            )
        yield connection
    finally:
        await connection.close()


def prepare_store(settings: Settings, *, fastforward: bool = True) -> JobLedger:
    ledger_store.ensure_database(settings.postgres)
    return ledger_store.open_ledger(settings.postgres, settings.ledger, fastforward=fastforward)


async def supervise(
    name: str, run: Callable[[], Coroutine[None, None, None]], stopping: asyncio.Event
) -> None:
    """Run ``run`` until stopping; if it fails, log it and start it again."""
    backoff = 0.5
    while not stopping.is_set():
        task = asyncio.create_task(run(), name=name)
        stop = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            stop.cancel()
            return
        stop.cancel()
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        log.error("%s stopped (%r); restarting in %.1fs", name, exc, backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff)
        backoff = min(backoff * 2, 10.0)


# The processes. Each runs until ``stopping`` is set.

# How often, at most, the projector and the gateway's stream follower read the
# ledger: under load each read then takes many commits' events at once. The
# dispatcher reads on every commit, as a job's start waits for it.
PROJECTOR_READ_INTERVAL_S = 0.02
STREAM_READ_INTERVAL_S = 0.01


async def run_dispatcher(
    settings: Settings, stopping: asyncio.Event, shared: JobLedger | None = None
) -> None:
    ledger = shared if shared is not None else await asyncio.to_thread(prepare_store, settings)
    positions = await asyncio.to_thread(
        ledger_store.open_positions, settings.postgres, "dispatcher"
    )
    registry = load_registry(settings.app)
    names = names_of(settings)
    depths = QueueDepths(names.dead_queue)
    work_queues = [names.work_queue(pool) for pool in pools_of(settings, registry)]

    async def dispatch() -> None:
        async with broker(settings, registry) as connection:
            sampling = asyncio.create_task(
                depths.watch(connection, work_queues, settings.observability.queue_depth_interval_s)
            )
            channel = await connection.channel(publisher_confirms=True)
            dispatcher = Dispatcher(
                source=LedgerFollower(ledger, settings.postgres.conninfo, topics=DISPATCHED_TOPICS),
                positions=positions,
                application_name=ledger.name,
                names=names,
                work_exchange=await channel.get_exchange(names.work_exchange),
                delay_exchange=await channel.get_exchange(names.delay_entry),
                control_exchange=await channel.get_exchange(names.control_exchange),
                publish_window=settings.amqp.publish_window,
            )
            try:
                await dispatcher.run()
            finally:
                sampling.cancel()

    await supervise("dispatcher", dispatch, stopping)


async def run_projector(
    settings: Settings, stopping: asyncio.Event, shared: JobLedger | None = None
) -> None:
    ledger = shared if shared is not None else await asyncio.to_thread(prepare_store, settings)
    view = await asyncio.to_thread(ledger_store.open_view, settings.postgres)

    def lag() -> int | None:
        return (ledger.recorder.max_notification_id() or 0) - (
            view.max_tracking_id(ledger.name) or 0
        )

    observe_projector_lag(lag)
    projector = Projector(
        source=LedgerFollower(
            ledger, settings.postgres.conninfo, min_interval_s=PROJECTOR_READ_INTERVAL_S
        ),
        view=view,
        application_name=ledger.name,
    )
    await supervise("projector", projector.run, stopping)


def retry_policy(settings: Settings) -> RetryPolicy:
    r = settings.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        base_delay_s=r.base_delay_s,
        factor=r.factor,
        max_delay_s=r.max_delay_s,
    )


async def run_worker(
    settings: Settings,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
    shared: JobLedger | None = None,
) -> None:
    ledger = (
        shared
        if shared is not None
        else await asyncio.to_thread(partial(prepare_store, settings, fastforward=False))
    )
    workers = await asyncio.to_thread(
        ledger_store.open_workers, settings.postgres, settings.worker.heartbeat_ttl_s
    )
    registry = load_registry(settings.app)
    names = names_of(settings)
    options = settings.worker
    await wait_for_broker(settings, stopping)
    if stopping.is_set():
        return
    async with broker(settings, registry) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=max(options.prefetch, options.concurrency))
        worker = Worker(
            ledger=ledger,
            registry=registry,
            channel=channel,
            messages=Messages(
                names=names,
                work=await channel.get_exchange(names.work_exchange),
                dead=await channel.get_exchange(names.dead_exchange),
                delay=await channel.get_exchange(names.delay_entry),
                control=await channel.get_exchange(names.control_exchange),
            ),
            liveness=workers,
            limiter=workers,
            retry_policy=retry_policy(settings),
            options=WorkerOptions(
                worker_id=f"{socket.gethostname()}:{os.getpid()}:{options.pool}",
                pool=options.pool,
                concurrency=options.concurrency,
                progress_interval_s=options.progress_interval_s,
                shutdown_timeout_s=options.shutdown_timeout_s,
                heartbeat_interval_s=options.heartbeat_interval_s,
            ),
        )
        if ready is not None:
            ready.set()
        await worker.run(stopping)


def build_gateway(settings: Settings, ledger: JobLedger, streams: Streams | None = None) -> FastAPI:
    registry = load_registry(settings.app)
    view = ledger_store.open_view(settings.postgres)
    services = Services(
        ledger=ledger,
        view=view,
        job_types=registry,
        identify=bearer_identify(auth.token_verifier(settings.auth)),
        default_max_attempts=settings.retry.max_attempts,
        read_your_writes_timeout_s=settings.gateway.read_your_writes_timeout_s,
        dead_letters=ManagementDeadLetters(
            settings.amqp.management_url, settings.amqp.url, names_of(settings).dead_queue
        ),
        max_body_bytes=settings.input.max_body_bytes,
        max_header_bytes=settings.input.max_header_bytes,
        streams=streams,
    )
    workers = ledger_store.open_workers(settings.postgres, settings.worker.heartbeat_ttl_s)

    def live_workers() -> list[LiveWorker]:
        return [LiveWorker(**row) for row in workers.live_workers()]

    app = create_app(
        services,
        correlation_header=settings.observability.correlation_header,
        operations=Ops(
            probes=probes(settings), metrics=telemetry.prometheus_text, workers=live_workers
        ),
    )
    telemetry.configure(settings.otel, "gateway").instrument_app(app)
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def run_gateway(
    settings: Settings,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
    shared: JobLedger | None = None,
) -> None:
    auth.token_verifier(settings.auth)  # refuse a bad key before touching any store
    ledger = shared if shared is not None else await asyncio.to_thread(prepare_store, settings)
    streams = await asyncio.to_thread(open_streams, settings, ledger)
    app = await asyncio.to_thread(build_gateway, settings, ledger, streams)
    follower = LedgerFollower(
        ledger,
        settings.postgres.conninfo,
        min_interval_s=STREAM_READ_INTERVAL_S,
        decode_if=streams.hub.listened_to,
    )
    following = asyncio.create_task(
        supervise("stream follower", partial(feed_hub, streams.hub, follower), stopping)
    )
    config = uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level="warning",
        # uvicorn's own handlers would bypass the process's log format (JSON lines, job
        # ids); no access log, as a GET may carry its token in the query string.
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        following.cancel()
        await serving  # raises why it could not start
        return
    log.info("gateway listening on http://%s:%s", settings.gateway.host, settings.gateway.port)
    if ready is not None:
        ready.set()
    await stopping.wait()
    streams.hub.close()  # open streams end, so the server can stop
    server.should_exit = True
    await serving
    await following


async def run_all(settings: Settings, stopping: asyncio.Event, ready: asyncio.Event) -> None:
    """Every process in one, for development."""
    auth.token_verifier(settings.auth)  # refuse a bad key before starting anything
    ledger = await asyncio.to_thread(prepare_store, settings)  # one ledger for all four
    gateway_ready, worker_ready = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Future[object]] = [
        asyncio.create_task(run_gateway(settings, stopping, gateway_ready, ledger), name="gateway"),
        asyncio.create_task(run_dispatcher(settings, stopping, ledger), name="dispatcher"),
        asyncio.create_task(run_projector(settings, stopping, ledger), name="projector"),
        asyncio.create_task(run_worker(settings, stopping, worker_ready, ledger), name="worker"),
    ]
    started: asyncio.Future[object] = asyncio.ensure_future(
        asyncio.gather(gateway_ready.wait(), worker_ready.wait())
    )
    await asyncio.wait({started, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        ready.set()
    else:
        started.cancel()
    await asyncio.gather(*tasks)
