"""``jobledger worker``: a worker process. It imports no HTTP server or client, and
no token code: a worker starts in a fraction of a second."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from functools import partial

from aio_pika.abc import AbstractRobustConnection

from application.attempts import Attempts
from consumers.messages import Messages
from consumers.process_run import ProcessStarter, job_modules
from consumers.registry import JobRegistry
from consumers.worker import Worker, WorkerOptions
from domain.ledger import JobLedger
from infra import ledger_store
from infra.bootstrap import (
    StoppedStarting,
    broker,
    load_registry,
    names_of,
    open_ledger,
    pools_of,
    retry_policy,
    served_pools,
    wait_for_broker,
    when_store_is_up,
)
from infra.settings import Settings
from infra.workers_store import PostgresWorkerStore


async def run_worker(
    settings: Settings,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    every_pool: bool = False,
) -> None:
    """A worker has a ledger of its own, without fast-forward: it alone writes the
    jobs it holds, so their cached copies are used without a read (domain/ledger.py).
    It consumes each pool it serves (``--pool a,b``; with ``every_pool``, as in
    ``jobledger run``, every pool the app registers unless a pool was named) with a
    worker of its own: its own id, channel, heartbeat and ``concurrency``. The pools
    share one zygote, which forks their process-run attempts: started here, when the
    app has such job types, so that its imports are done before the first job."""
    registry = load_registry(settings.app)
    options = settings.worker
    ledger = await open_ledger(settings, stopping, fastforward=False)
    workers = await when_store_is_up(
        settings,
        stopping,
        partial(ledger_store.open_workers, settings.postgres, options.heartbeat_ttl_s),
        "the workers table",
    )
    if ledger is None or workers is None:
        return
    await wait_for_broker(settings, stopping)
    if stopping.is_set():
        return
    named = "pool" in options.model_fields_set
    pools = pools_of(settings, registry) if every_pool and not named else served_pools(settings)
    processes = ProcessStarter(job_modules(registry))
    if processes.modules:
        processes.open()
    try:
        async with broker(settings, registry, stopping) as connection:
            consumers = [
                await _pool_worker(settings, registry, ledger, workers, connection, pool, processes)
                for pool in pools
            ]
            if ready is not None:
                ready.set()
            try:
                await asyncio.gather(*(worker.run(stopping) for worker in consumers))
            finally:
                await asyncio.to_thread(ledger.close)
    except StoppedStarting:
        return
    finally:
        await processes.close()


async def _pool_worker(
    settings: Settings,
    registry: JobRegistry,
    ledger: JobLedger,
    workers: PostgresWorkerStore,
    connection: AbstractRobustConnection,
    pool: str,
    processes: ProcessStarter,
) -> Worker:
    options = settings.worker
    names = names_of(settings)
    # Unique to this process's life: a container restarted keeps its hostname and,
    # often, its pid, and a new process must never take the old one's attempts for its own.
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{pool}:{secrets.token_hex(3)}"
    attempts = Attempts(
        ledger=ledger,
        job_kinds=registry,
        liveness=workers,
        limiter=workers,
        retry_policy=retry_policy(settings),
        worker_id=worker_id,
        pool=pool,
        # A holder must look dead for longer than a heartbeat interval before its
        # attempt is recorded lost (its beats may only have paused).
        dead_for_s=options.heartbeat_interval_s + 1.0,
    )
    channel = await connection.channel(publisher_confirms=True)
    return Worker(
        attempts=attempts,
        channel=channel,
        messages=Messages(
            names=names,
            work=await channel.get_exchange(names.work_exchange),
            dead=await channel.get_exchange(names.dead_exchange),
            delay=await channel.get_exchange(names.delay_entry),
            control=await channel.get_exchange(names.control_exchange),
        ),
        options=WorkerOptions(
            pool=pool,
            concurrency=options.concurrency,
            progress_interval_s=options.progress_interval_s,
            shutdown_timeout_s=options.shutdown_timeout_s,
            heartbeat_interval_s=options.heartbeat_interval_s,
            # Half the TTL: a beat late by as much again still finds the worker alive.
            idle_heartbeat_interval_s=max(
                options.heartbeat_interval_s, options.heartbeat_ttl_s / 2
            ),
            log_tracebacks=options.log_tracebacks,
            starvation_bound=options.starvation_bound,
            prefetch=options.prefetch,
        ),
        processes=processes,
    )
