"""``jobledger scheduler`` (and a task of ``jobledger run``): applies the schedules
declared in code, then fires every schedule's due ticks: at the next tick it knows
of, and at least every ``interval_s``. Any number of schedulers may run: a tick's job
is named by the tick, so it is one job whoever fires it (application/schedules.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from functools import partial

from application.schedules import Declared, Scheduler, Schedules
from application.submissions import Submissions
from domain.ledger import JobLedger
from domain.schedule_book import ScheduleBook
from infra.bootstrap import load_registry, open_ledger, supervise, when_store_is_up
from infra.schedule_index import open_schedule_index
from infra.settings import Settings

log = logging.getLogger("jobledger.scheduler")


async def run_scheduler(
    settings: Settings,
    stopping: asyncio.Event,
    ready: asyncio.Event,
    shared: JobLedger | None = None,
) -> None:
    ledger = shared if shared is not None else await open_ledger(settings, stopping)
    if ledger is None:
        return
    index = await when_store_is_up(
        settings,
        stopping,
        partial(open_schedule_index, settings.postgres, ledger),
        "the schedules",
    )
    if index is None:
        return
    options = settings.scheduler
    registry = load_registry(settings.app)
    book = ScheduleBook(ledger)
    scheduler = Scheduler(
        book,
        index,
        Submissions(ledger, registry, settings.retry.max_attempts),
        on_time_s=options.on_time_s,
        max_ticks=options.max_ticks_per_pass,
    )
    declared = [
        Declared(t.name, t.schedule, t.schedule_zone)
        for t in registry.scheduled()
        if t.schedule is not None
    ]

    def apply_declared() -> None:
        done = scheduler.apply_declared(
            declared,
            tenant=options.code_tenant,
            case_id=options.code_case_id,
            schedules=Schedules(book, registry, index),
        )
        for name, what in done.items():
            level = logging.ERROR if what.startswith("refused") else logging.INFO
            log.log(level, "code schedule %s: %s", name, what)

    async def fire() -> None:
        if declared:
            await asyncio.to_thread(apply_declared)
        ready.set()
        while not stopping.is_set():
            for fired in await asyncio.to_thread(scheduler.fire_due, datetime.now(UTC)):
                log.info(
                    "schedule %s fired its tick %s: job %s%s",
                    fired.schedule_id,
                    fired.tick.isoformat(),
                    fired.job_id,
                    "" if fired.created else " (submitted already)",
                )
            # Until the next tick it knows of, or interval_s (a schedule created or
            # changed meanwhile is seen then), whichever comes first.
            wait_s = options.interval_s
            if scheduler.next_tick is not None:
                # (5 ms past it: a timer that fires early would find it not yet due)
                until_tick = (scheduler.next_tick - datetime.now(UTC)).total_seconds() + 0.005
                wait_s = min(wait_s, max(until_tick, 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await stopping.wait()

    await supervise("scheduler", fire, stopping)
