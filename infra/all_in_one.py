"""``jobledger run``: every process in one (the scheduler too), for development. The worker keeps a
ledger of its own, as a ``jobledger worker`` process does."""

from __future__ import annotations

import asyncio

from infra import auth
from infra.bootstrap import open_ledger
from infra.gateway_process import run_gateway
from infra.kept_cancels import cancel_and_wait
from infra.ledger_processes import run_dispatcher, run_projector
from infra.scheduler_process import run_scheduler
from infra.settings import Settings
from infra.worker_process import run_worker


async def run_all(settings: Settings, stopping: asyncio.Event, ready: asyncio.Event) -> None:
    auth.token_verifier(settings.auth, settings.gateway.host)  # a bad key: refused first
    ledger = await open_ledger(settings, stopping)  # one for the gateway, dispatcher, projector
    if ledger is None:
        return
    gateway_ready, worker_ready = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Future[object]] = [
        asyncio.create_task(run_gateway(settings, stopping, gateway_ready, ledger), name="gateway"),
        asyncio.create_task(run_dispatcher(settings, stopping, ledger), name="dispatcher"),
        asyncio.create_task(run_projector(settings, stopping, ledger), name="projector"),
        asyncio.create_task(
            run_scheduler(settings, stopping, asyncio.Event(), ledger), name="scheduler"
        ),
        asyncio.create_task(
            run_worker(settings, stopping, worker_ready, every_pool=True), name="worker"
        ),
    ]
    started: asyncio.Future[object] = asyncio.ensure_future(
        asyncio.gather(gateway_ready.wait(), worker_ready.wait())
    )
    await asyncio.wait({started, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        ready.set()
    else:  # a process could not start (the gateway's port is taken, say): stop them all
        await cancel_and_wait(started)
        stopping.set()
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
