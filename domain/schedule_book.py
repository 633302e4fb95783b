"""Commands on schedules, each one transaction in the ledger the jobs are in (the
JobLedger application's event store: the same table, chain and positions)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.origin import Origin
from domain.schedule import Schedule, ScheduleExists, ScheduleNotFound, schedule_id

CONFLICT_RETRIES = 5


class ScheduleBook:
    def __init__(self, ledger: Application[UUID]) -> None:
        self.ledger = ledger

    def create(
        self, *, tenant: str, name: str, definition: dict[str, Any], paused: bool, origin: Origin
    ) -> Schedule:
        """ScheduleExists if the tenant has a schedule of that name (deleted or not)."""
        schedule = Schedule.create(
            tenant=tenant, name=name, definition=definition, paused=paused, origin=origin
        )
        try:
            self.ledger.save(schedule)
        except IntegrityError:
            raise ScheduleExists(f"the tenant has a schedule named {name!r}") from None
        return schedule

    def get(self, sid: UUID) -> Schedule:
        try:
            schedule: object = self.ledger.repository.get(sid)
        except AggregateNotFoundError:
            raise ScheduleNotFound from None
        if not isinstance(schedule, Schedule):
            raise ScheduleNotFound  # a job's id
        return schedule

    def find(self, tenant: str, name: str) -> Schedule:
        schedule = self.get(schedule_id(tenant, name))
        if schedule.tenant != tenant:
            raise ScheduleNotFound
        return schedule

    def read(self, sid: UUID) -> Schedule:
        """The schedule as the store has it now, never an older cached copy."""
        self._forget(sid)
        return self.get(sid)

    def history(self, sid: UUID) -> Sequence[Any]:
        self.get(sid)
        return list(self.ledger.events.get(sid))

    def change(self, sid: UUID, command: Callable[[Schedule], Any]) -> Schedule:
        """Load, decide and save; on a concurrent write, reload and decide again."""
        for _ in range(CONFLICT_RETRIES):
            schedule = self.get(sid)
            command(schedule)
            try:
                self.ledger.save(schedule)
            except IntegrityError:
                self._forget(sid)
                continue
            except Exception:
                self._forget(sid)
                raise
            return schedule
        schedule = self.read(sid)
        command(schedule)
        self.ledger.save(schedule)
        return schedule

    def _forget(self, sid: UUID) -> None:
        cache = self.ledger.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(sid, evict=True)
