"""Runs the job projection: follows the ledger from the view's own tracked position
and applies each batch of events in one transaction with its position. Stopped or
crashed at any moment, it resumes without loss or double counting; started on an
empty view, it rebuilds the view from the first event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from eventsourcing.persistence import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    Tracking,
)

from projections.projection import JobProjection, JobView, Unprojectable, ViewChange

log = logging.getLogger("jobledger.projector")


class EventSource(Protocol):
    def batches(self, after: int | None) -> AsyncGenerator[Sequence[tuple[Any, int]], None]: ...


class Projector:
    def __init__(self, *, source: EventSource, view: JobView, application_name: str) -> None:
        self.source = source
        self.view = view
        self.application_name = application_name
        self.projection = JobProjection()
        self.position: int = 0
        self.unprojectable = 0  # events set aside, counted from the view at start

    async def run(self) -> None:
        after = await asyncio.to_thread(self.view.max_tracking_id, self.application_name)
        self.unprojectable = len(await asyncio.to_thread(self.view.unprojectable))
        self.position = after or 0
        log.info("projecting from ledger position %s", self.position)
        # Closed when the run is (a cancel lands between batches, not in the source):
        # the source's connection closes then, not whenever it is collected.
        async with contextlib.aclosing(self.source.batches(after)) as batches:
            async for batch in batches:
                if not await self._apply(self._changes(batch), self._tracking(batch)):
                    # The view refused something in the batch: one event at a time, and
                    # what it still refuses is recorded as unprojectable, never retried.
                    for one in batch:
                        if not await self._apply(self._changes([one]), self._tracking([one])):
                            await self._skip(*one)
                self.position = batch[-1][1]

    def _changes(self, batch: Sequence[tuple[Any, int]]) -> list[ViewChange]:
        return [c for event, position in batch for c in self.projection.changes(event, position)]

    def _tracking(self, batch: Sequence[tuple[Any, int]]) -> Tracking:
        return Tracking(self.application_name, batch[-1][1])

    async def _apply(self, changes: Sequence[ViewChange], tracking: Tracking) -> bool:
        """Apply, holding on while the view is unreachable; False if it refused."""
        backoff = 0.1
        while True:
            try:
                await asyncio.to_thread(self.view.apply, changes, tracking)
                return True
            except IntegrityError as exc:
                # A position applied twice (another projector got there first), or a
                # constraint refusing a value: only the view's own position tells.
                if await self._applied(tracking):
                    log.warning("position %s was already applied", tracking.notification_id)
                    return True
                self.refusal = _reason(exc)
                return False
            except (OperationalError, InterfaceError) as exc:
                log.warning("view unreachable, retrying in %.1fs: %s", backoff, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except DatabaseError as exc:
                self.refusal = _reason(exc)
                return False

    async def _applied(self, tracking: Tracking) -> bool:
        """Has the view recorded this position (or a later one) as applied?"""
        while True:
            try:
                done = await asyncio.to_thread(self.view.max_tracking_id, self.application_name)
            except (OperationalError, InterfaceError):
                await asyncio.sleep(1.0)
                continue
            return done is not None and done >= tracking.notification_id

    async def _skip(self, event: Any, position: int) -> None:
        unprojectable = Unprojectable(
            position=position,
            job_id=event.originator_id,
            event=type(event).__name__,
            reason=getattr(self, "refusal", "refused"),
        )
        log.error(
            "event %s at position %s of job %s is unprojectable (%s): recorded, and the "
            "projection goes on",
            unprojectable.event,
            position,
            unprojectable.job_id,
            unprojectable.reason,
        )
        tracking = Tracking(self.application_name, position)
        while True:
            try:
                await asyncio.to_thread(self.view.skip, unprojectable, tracking)
                self.unprojectable += 1
                return
            except IntegrityError:
                return
            except (OperationalError, InterfaceError):
                await asyncio.sleep(1.0)


def _reason(exc: DatabaseError) -> str:
    """The error's type and SQLSTATE: never its message, which may quote the value."""
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None)
    return f"{type(cause or exc).__name__}{f' ({code})' if code else ''}"
