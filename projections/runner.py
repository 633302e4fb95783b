"""Runs the job projection: follows the ledger from the view's own tracked position
and applies each batch of events in one transaction with its position. Stopped or
crashed at any moment, it resumes without loss or double counting; started on an
empty view, it rebuilds the view from the first event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, Tracking

from projections.projection import JobProjection, JobView, ViewChange

log = logging.getLogger("jobledger.projector")


class EventSource(Protocol):
    def batches(self, after: int | None) -> AsyncIterator[Sequence[tuple[Any, int]]]: ...


class Projector:
    def __init__(self, *, source: EventSource, view: JobView, application_name: str) -> None:
        self.source = source
        self.view = view
        self.application_name = application_name
        self.projection = JobProjection()
        self.position: int = 0

    async def run(self) -> None:
        after = await asyncio.to_thread(self.view.max_tracking_id, self.application_name)
        self.position = after or 0
        log.info("projecting from ledger position %s", self.position)
        async for batch in self.source.batches(after):
            changes = [
                change
                for event, position in batch
                for change in self.projection.changes(event, position)
            ]
            await self._apply(changes, Tracking(self.application_name, batch[-1][1]))
            self.position = batch[-1][1]

    async def _apply(self, changes: Sequence[ViewChange], tracking: Tracking) -> None:
        backoff = 0.1
        while True:
            try:
                await asyncio.to_thread(self.view.apply, changes, tracking)
                return
            except IntegrityError:
                log.warning("position %s was already applied", tracking.notification_id)
                return
            except (OperationalError, InterfaceError) as exc:
                log.warning("view unreachable, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
