"""``jobledger dispatcher`` and ``jobledger projector``: the two processes that follow
the ledger from a position of their own."""

from __future__ import annotations

import asyncio
from functools import partial

from application.handover import HandOver
from application.lanes import LANES, TenantShares
from application.outbox import DISPATCHED_TOPICS, FOLLOWED_TOPICS
from consumers.dispatcher import Dispatcher
from domain.ledger import JobLedger
from infra import ledger_store
from infra.bootstrap import (
    broker,
    load_registry,
    names_of,
    open_ledger,
    pools_of,
    supervise,
    when_store_is_up,
)
from infra.follower import LedgerFollower
from infra.gauges import QueueDepths, observe_projector_lag, observe_unprojectable
from infra.settings import Settings
from projections.runner import Projector


def dispatcher_source(settings: Settings, ledger: JobLedger) -> LedgerFollower:
    """Woken by the commits that call for a message, as a job's start waits for it;
    read at most every ``dispatcher_read_interval_s`` while they keep coming."""
    return LedgerFollower(
        ledger,
        settings.postgres.conninfo,
        topics=FOLLOWED_TOPICS,
        woken_by=DISPATCHED_TOPICS,
        min_interval_s=settings.ledger.dispatcher_read_interval_s,
    )


def projector_source(settings: Settings, ledger: JobLedger) -> LedgerFollower:
    """Woken by every commit; read at most every ``projector_read_interval_s``, so
    under load each read and each transaction of the view take many commits' events."""
    return LedgerFollower(
        ledger,
        settings.postgres.conninfo,
        min_interval_s=settings.ledger.projector_read_interval_s,
    )


async def run_dispatcher(
    settings: Settings, stopping: asyncio.Event, shared: JobLedger | None = None
) -> None:
    ledger = shared if shared is not None else await open_ledger(settings, stopping)
    positions = await when_store_is_up(
        settings,
        stopping,
        partial(ledger_store.open_positions, settings.postgres, "dispatcher"),
        "the dispatcher's position",
    )
    view = await when_store_is_up(
        settings, stopping, partial(ledger_store.open_view, settings.postgres), "the job view"
    )
    if ledger is None or positions is None or view is None:
        return
    registry = load_registry(settings.app)
    names = names_of(settings)
    depths = QueueDepths(names.dead_queue, settings.observability.unserved_pool_warning_s)
    work_queues = {
        names.work_queue(pool, lane): pool
        for pool in pools_of(settings, registry)
        for lane in LANES
    }

    async def dispatch() -> None:
        async with broker(settings, registry) as connection:
            sampling = asyncio.create_task(
                depths.watch(connection, work_queues, settings.observability.queue_depth_interval_s)
            )
            channel = await connection.channel(publisher_confirms=True)
            dispatcher = Dispatcher(
                source=dispatcher_source(settings, ledger),
                positions=positions,
                application_name=ledger.name,
                names=names,
                work_exchange=await channel.get_exchange(names.work_exchange),
                delay_exchange=await channel.get_exchange(names.delay_entry),
                control_exchange=await channel.get_exchange(names.control_exchange),
                publish_window=settings.amqp.publish_window,
                shares=TenantShares(settings.amqp.tenant_share),
                on_sent=depths.sent,
            )
            try:
                await dispatcher.run()
            finally:
                sampling.cancel()

    hand_over = HandOver(
        ledger=ledger,
        held=view,
        range_s=names.max_delay_s,
        interval_s=settings.scheduling.hand_over_interval_s,
    )
    handing = asyncio.create_task(hand_over.run(), name="hand over scheduled jobs")
    try:
        await supervise("dispatcher", dispatch, stopping)
    finally:
        handing.cancel()
        await asyncio.gather(handing, return_exceptions=True)


async def run_projector(
    settings: Settings, stopping: asyncio.Event, shared: JobLedger | None = None
) -> None:
    ledger = shared if shared is not None else await open_ledger(settings, stopping)
    view = await when_store_is_up(
        settings, stopping, partial(ledger_store.open_view, settings.postgres), "the job view"
    )
    if ledger is None or view is None:
        return

    def lag() -> int | None:
        return (ledger.recorder.max_notification_id() or 0) - (
            view.max_tracking_id(ledger.name) or 0
        )

    observe_projector_lag(lag)
    projector = Projector(
        source=projector_source(settings, ledger),
        view=view,
        application_name=ledger.name,
    )
    observe_unprojectable(lambda: projector.unprojectable)
    await supervise("projector", projector.run, stopping)
