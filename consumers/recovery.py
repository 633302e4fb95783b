"""A delivery that comes back while its job is still running that attempt.

RabbitMQ redelivers a message when the channel that held it closed: its worker
died (kill -9, a crash loop, a lost connection) or the broker took it back
(consumer_timeout). If that worker is still alive and still holds the job, the
attempt goes on: hold this copy until the attempt ends, then drop it. If not, the
attempt was lost: record it as a failed attempt, which schedules the next one (or
fails the job when none are left)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol
from uuid import UUID

from consumers.store import Store
from domain.job import Job, Status
from domain.ledger import JobLedger
from domain.origin import Origin

log = logging.getLogger("jobledger.worker")


class Holders(Protocol):
    def holds(self, worker_id: str, job_id: UUID) -> bool: ...


class Recovery:
    def __init__(
        self, ledger: JobLedger, holders: Holders, store: Store, poll_s: float = 1.0
    ) -> None:
        self.ledger = ledger
        self.holders = holders
        self.store = store
        self.poll_s = poll_s

    async def settle(self, job: Job, origin: Origin, retry_delay_s: float) -> bool:
        """Wait out or give up the running attempt; True if the job has now failed."""
        attempt = job.attempt
        while job.status is Status.RUNNING and job.attempt == attempt:
            if not await self.store.call(self.holders.holds, job.worker_id, job.id):
                return await self._lost(job, origin, retry_delay_s)
            await asyncio.sleep(self.poll_s)
            job = await self.store.call(self.ledger.read_job, job.id)
        return False

    async def _lost(self, job: Job, origin: Origin, retry_delay_s: float) -> bool:
        error = f"attempt {job.attempt} was lost: worker {job.worker_id} stopped"
        log.warning("job %s: %s", job.id, error)
        committed = await self.store.record(
            self.ledger.fail_attempt,
            job.id,
            error,
            retryable=True,
            retry_delay_s=retry_delay_s,
            origin=origin,
            attempt=job.attempt,
        )
        return committed is not None and committed.job.status is Status.FAILED
