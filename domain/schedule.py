"""The Schedule aggregate: a cron schedule's whole life as events, in the same ledger
as the jobs it fires.

    Created ──► Changed* ──► Paused ⇄ Resumed ──► Deleted
                   │
                   └── TickFired (tick, job_id) for each tick fired, oldest first

A schedule's id is derived from its tenant and name (``schedule_id``), so a name is
unique within its tenant by the ledger's own key: a second ``Created`` under the same
id is refused. Every event says who caused it (``actor``: a token's subject, or
``code`` for a schedule declared next to its job type)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import storable
from domain.errors import LedgerError
from domain.origin import Origin

SCHEDULE_NAMESPACE = UUID("3b7f0c1e-8d2a-4f5b-9a61-2c4e7d9b0f13")
TICK_NAMESPACE = UUID("9e2d4a70-51c3-4b8e-a6f2-7d0c3e5b1a84")
CODE = "code"  # the actor of a schedule declared in code


class CatchUp(StrEnum):
    """Which ticks missed while no scheduler ran are fired when one runs again."""

    ALL = "all"  # every one, oldest first
    LATEST = "latest"  # only the most recent
    NONE = "none"  # none: only a tick that is due now


class ScheduleNotFound(LedgerError):
    """No such schedule."""


class ScheduleExists(LedgerError):
    """A schedule of this name exists already."""


class ScheduleDeleted(LedgerError):
    """The schedule was deleted."""


# What a schedule's definition holds, and what ``Changed`` may change.
DEFINITION = ("cron", "zone", "job_type", "case_id", "params", "catch_up")


def schedule_id(tenant: str, name: str) -> UUID:
    """The one id a tenant's schedule of this name has."""
    return uuid.uuid5(SCHEDULE_NAMESPACE, f"{tenant}\n{name}")


def tick_job_id(schedule: UUID, tick: datetime) -> UUID:
    """The id of the job a tick fires: the same for every scheduler that fires it."""
    return uuid.uuid5(TICK_NAMESPACE, f"{schedule}\n{tick.timestamp():.6f}")


class Schedule(Aggregate):
    """A job submitted at each tick of a cron expression, in an IANA time zone."""

    class Event(Aggregate.Event):
        tenant: str
        actor: str
        correlation_id: str

    class Created(Aggregate.Created):
        tenant: str
        actor: str
        correlation_id: str
        name: str
        cron: str
        zone: str
        job_type: str
        case_id: str
        params: dict[str, Any]
        catch_up: str
        paused: bool

    class Changed(Event):
        """``changes``: the definition's fields that changed, with their new values."""

        changes: dict[str, Any]

        def apply(self, schedule: Schedule) -> None:
            for name, value in self.changes.items():
                setattr(schedule, name, value)
            schedule.since = self.timestamp

    class Paused(Event):
        def apply(self, schedule: Schedule) -> None:
            schedule.paused = True

    class Resumed(Event):
        def apply(self, schedule: Schedule) -> None:
            schedule.paused, schedule.since = False, self.timestamp

    class Deleted(Event):
        def apply(self, schedule: Schedule) -> None:
            schedule.deleted = True

    class TickFired(Event):
        tick: datetime
        job_id: UUID

        def apply(self, schedule: Schedule) -> None:
            schedule.last_tick = self.tick
            schedule.last_job_id = self.job_id

    def __init__(
        self,
        *,
        tenant: str,
        actor: str,
        correlation_id: str,
        name: str,
        cron: str,
        zone: str,
        job_type: str,
        case_id: str,
        params: dict[str, Any],
        catch_up: str,
        paused: bool,
        timestamp: datetime,
    ) -> None:
        self.tenant, self.name, self.created_by = tenant, name, actor
        self.cron, self.zone, self.job_type, self.case_id = cron, zone, job_type, case_id
        self.params, self.catch_up, self.paused = params, catch_up, paused
        self.deleted = False
        # Ticks after ``since`` are due: the creation, the last change of the
        # definition, or the last resume (ticks while paused are never fired).
        self.since = timestamp
        self.last_tick: datetime | None = None
        self.last_job_id: UUID | None = None

    @classmethod
    def create(
        cls,
        *,
        tenant: str,
        name: str,
        definition: dict[str, Any],
        paused: bool,
        origin: Origin,
    ) -> Schedule:
        return cls._create(
            cls.Created,
            id=schedule_id(tenant, name),
            tenant=tenant,
            actor=storable.text(origin.actor),
            correlation_id=storable.text(origin.correlation_id),
            name=name,
            paused=paused,
            **{k: definition[k] for k in DEFINITION},
        )

    def definition(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in DEFINITION}

    @property
    def after(self) -> datetime:
        """Ticks after this time are the ones still to fire."""
        return self.since if self.last_tick is None else max(self.since, self.last_tick)

    def change(self, definition: dict[str, Any], origin: Origin) -> bool:
        """Record what differs from the definition given; False when nothing does."""
        self._live()
        changes = {k: v for k, v in definition.items() if k in DEFINITION and getattr(self, k) != v}
        if changes:
            self._record(self.Changed, origin, changes=changes)
        return bool(changes)

    def pause(self, origin: Origin) -> None:
        self._live()
        if not self.paused:
            self._record(self.Paused, origin)

    def resume(self, origin: Origin) -> None:
        self._live()
        if self.paused:
            self._record(self.Resumed, origin)

    def delete(self, origin: Origin) -> None:
        self._live()
        self._record(self.Deleted, origin)

    def fire(self, tick: datetime, job_id: UUID, origin: Origin) -> bool:
        """Record that ``tick`` fired ``job_id``; False (nothing recorded) when that
        tick or a later one is recorded already, or the schedule no longer fires."""
        if self.deleted or self.paused or tick <= self.after:
            return False
        self._record(self.TickFired, origin, tick=tick, job_id=job_id)
        return True

    def _live(self) -> None:
        if self.deleted:
            raise ScheduleDeleted

    def _record(self, event_class: type[Schedule.Event], origin: Origin, **fields: Any) -> None:
        self.trigger_event(
            event_class,
            tenant=self.tenant,
            actor=storable.text(origin.actor),
            correlation_id=storable.text(origin.correlation_id),
            **fields,
        )


def is_schedule_event(event: object) -> bool:
    return isinstance(event, (Schedule.Event, Schedule.Created))
