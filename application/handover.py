"""Handing long delays over to the delay queues.

A job scheduled further ahead than the delay queues carry (``range_s``, 2^levels - 1
s) is kept in the ledger at submission (``domain.job.held_at_submission``). A pass,
every ``interval_s`` in the dispatcher process (at most half the range: a job that came
within range just after a pass is handed over with at least half the range still to
wait, never late), asks an index (the job view) for the
held jobs whose ``run_at`` is now within range, and the ledger hands each over
(``Job.HandedOver``), which the outbox turns into a delivery for the remaining time.
The index only proposes: the ledger decides, so a job cancelled, started or handed
over meanwhile is left alone, and two passes (two dispatchers, or one restarted)
hand a job over once. A pass that was down catches up at its next run: a job whose
``run_at`` passed meanwhile is handed over with no delay left."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from domain.ledger import Committed
from domain.origin import SYSTEM, Origin

log = logging.getLogger("jobledger.handover")
PAGE = 500


class HeldJobs(Protocol):
    """An index of the jobs held in the ledger (the job view)."""

    def held_due(self, *, by: datetime, range_s: float, limit: int) -> list[UUID]:
        """Scheduled jobs held at submission, not handed over, due by ``by``; oldest
        ``run_at`` first."""
        ...


class HandingLedger(Protocol):
    def hand_over_job(
        self, job_id: UUID, range_s: float, origin: Origin, now: datetime | None = None
    ) -> Committed | None: ...


class HandOver:
    def __init__(
        self,
        *,
        ledger: HandingLedger,
        held: HeldJobs,
        range_s: float,
        interval_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ledger = ledger
        self.held = held
        self.range_s = range_s
        self.interval_s = min(interval_s, range_s / 2)
        self.clock = clock
        self.sleep = sleep

    def pass_once(self) -> int:
        """Hand over every held job now within range; how many the ledger took."""
        handed = 0
        seen: set[UUID] = set()
        while True:
            now = self.clock()
            by = now + timedelta(seconds=self.range_s)
            due = self.held.held_due(by=by, range_s=self.range_s, limit=PAGE)
            fresh = [j for j in due if j not in seen]
            for job_id in fresh:
                seen.add(job_id)
                if self.ledger.hand_over_job(job_id, self.range_s, Origin(SYSTEM), now):
                    handed += 1
            # The view lags the ledger: a page of jobs the ledger refused (handed over,
            # its projection not there yet) ends the pass; the next one sees them gone.
            if len(due) < PAGE or not fresh:
                return handed

    async def run(self) -> None:
        """A pass every ``interval_s`` until cancelled. A pass that fails (the store
        unreachable) is logged, and the next one tries again."""
        while True:
            try:
                handed = await asyncio.to_thread(self.pass_once)
                if handed:
                    log.info("handed %d scheduled jobs over to the delay queues", handed)
            except Exception as exc:  # noqa: BLE001 - the next pass decides again
                log.warning("handing scheduled jobs over failed: %s", type(exc).__name__)
            await self.sleep(self.interval_s)
