"""Cron schedules: defining them (validated as a submit is), and firing their ticks.

A tick fires exactly once because the job it submits is named by the tick: its id is
``uuid5(schedule id, tick instant)`` (domain.schedule.tick_job_id). The scheduler
submits that job first and records ``TickFired`` after; whoever fires the tick again
(a second scheduler, or this one restarted after dying between the two writes)
submits the same id, which the ledger already holds, and is answered with that job
(``Submissions.submit``), so there is never a second job. ``TickFired`` is only the
scheduler's cursor: it moves the schedule past the tick, and a concurrent second
``TickFired`` for the same tick is refused by the schedule's version and then found
to be recorded already."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from application import ticks
from application.submissions import Submissions, SubmittableTypes
from domain.errors import DuplicateSubmission, LedgerError
from domain.origin import SYSTEM, Origin
from domain.schedule import (
    CODE,
    CatchUp,
    Schedule,
    ScheduleDeleted,
    ScheduleExists,
    ScheduleNotFound,
    tick_job_id,
)
from domain.schedule_book import ScheduleBook

log = logging.getLogger("jobledger.scheduler")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class ScheduleIndex(Protocol):
    """Where the ledger's schedules are found."""

    def ids(self) -> list[UUID]:
        """The id of every schedule ever created (deleted ones included)."""
        ...


@dataclass(frozen=True)
class Declared:
    """A schedule declared in code next to its job type (its name is the type's)."""

    job_type: str
    cron: str
    zone: str = "UTC"
    params: dict[str, Any] = field(default_factory=dict)
    catch_up: str = CatchUp.LATEST.value


class Schedules:
    """The use cases behind /schedules and ``jobledger schedule``: every read and
    change within the caller's tenant (another tenant's schedule is not found)."""

    def __init__(
        self, book: ScheduleBook, job_types: SubmittableTypes, index: ScheduleIndex
    ) -> None:
        self.book, self.job_types, self.index = book, job_types, index

    def validated(self, definition: dict[str, Any]) -> dict[str, Any]:
        """The definition with its params normalised as a submit does; InvalidSchedule,
        UnknownJobType or InvalidParams if it cannot fire."""
        ticks.check(definition["cron"], definition["zone"])
        try:
            CatchUp(definition["catch_up"])
        except ValueError:
            options = ", ".join(c.value for c in CatchUp)
            raise ticks.InvalidSchedule("catch_up", f"catch_up is one of {options}") from None
        params = self.job_types.validate(definition["job_type"], definition["params"])
        return {**definition, "params": params}

    def add(
        self, tenant: str, name: str, definition: dict[str, Any], *, paused: bool, origin: Origin
    ) -> Schedule:
        if not NAME.fullmatch(name):
            raise ticks.InvalidSchedule("name", f"a schedule's name matches {NAME.pattern}")
        return self.book.create(
            tenant=tenant,
            name=name,
            definition=self.validated(definition),
            paused=paused,
            origin=origin,
        )

    def get(self, tenant: str, sid: UUID) -> Schedule:
        schedule = self.book.get(sid)
        if schedule.tenant != tenant or schedule.deleted:
            raise ScheduleNotFound
        return schedule

    def history(self, tenant: str, sid: UUID) -> tuple[Schedule, Sequence[Any]]:
        schedule = self.get(tenant, sid)
        return schedule, self.book.history(sid)

    def list(self, tenant: str) -> list[Schedule]:
        found = []
        for sid in self.index.ids():
            schedule = self.book.get(sid)
            if schedule.tenant == tenant and not schedule.deleted:
                found.append(schedule)
        return sorted(found, key=lambda s: s.name)

    def change(self, tenant: str, sid: UUID, fields: dict[str, Any], origin: Origin) -> Schedule:
        schedule = self.get(tenant, sid)
        definition = self.validated({**schedule.definition(), **fields})
        return self.book.change(sid, lambda s: s.change(definition, origin))

    def pause(self, tenant: str, sid: UUID, origin: Origin) -> Schedule:
        self.get(tenant, sid)
        return self.book.change(sid, lambda s: s.pause(origin))

    def resume(self, tenant: str, sid: UUID, origin: Origin) -> Schedule:
        self.get(tenant, sid)
        return self.book.change(sid, lambda s: s.resume(origin))

    def delete(self, tenant: str, sid: UUID, origin: Origin) -> Schedule:
        self.get(tenant, sid)
        return self.book.change(sid, lambda s: s.delete(origin))


@dataclass(frozen=True)
class Fired:
    schedule_id: UUID
    tick: datetime
    job_id: UUID
    created: bool  # False: the tick's job was in the ledger already


class Scheduler:
    """Fires every schedule's due ticks. Any number may run at once."""

    def __init__(
        self,
        book: ScheduleBook,
        index: ScheduleIndex,
        submissions: Submissions,
        *,
        on_time_s: float = 60.0,
        max_ticks: int = 1000,
    ) -> None:
        self.book, self.index, self.submissions = book, index, submissions
        self.on_time_s, self.max_ticks = on_time_s, max_ticks
        self.origin = Origin(actor=SYSTEM)
        self.next_tick: datetime | None = None  # as the last fire_due saw it

    def fire_due(self, now: datetime) -> list[Fired]:
        """Submit the job of every tick due by ``now`` and record it fired. Sets
        ``next_tick``: the first tick after ``now`` of any schedule it saw."""
        fired: list[Fired] = []
        self.next_tick = None
        for sid in self.index.ids():
            schedule = self.book.get(sid)
            if schedule.deleted or schedule.paused:
                continue
            upcoming = ticks.first_after(schedule.cron, schedule.zone, max(now, schedule.after))
            if upcoming is not None and (self.next_tick is None or upcoming < self.next_tick):
                self.next_tick = upcoming
            for tick in ticks.due(
                schedule.cron,
                schedule.zone,
                CatchUp(schedule.catch_up),
                after=schedule.after,
                now=now,
                on_time_s=self.on_time_s,
                limit=self.max_ticks,
            ):
                done = self.fire(schedule, tick)
                if done is None:
                    break  # the next ticks wait for this one
                fired.append(done)
        return fired

    def fire(self, schedule: Schedule, tick: datetime) -> Fired | None:
        """The tick's job (submitted now, or found), then ``TickFired``; None when the
        job cannot be submitted (its type gone, its params no longer valid)."""
        job_id = tick_job_id(schedule.id, tick)
        origin = Origin(actor=SYSTEM, correlation_id=f"schedule-{schedule.id}")
        try:
            submitted = self.submissions.submit(
                job_id=job_id,
                tenant=schedule.tenant,
                case_id=schedule.case_id,
                job_type=schedule.job_type,
                params=schedule.params,
                origin=origin,
            )
            created = submitted.created
        except DuplicateSubmission:
            created = False  # fired before the schedule's type or case changed
        except LedgerError as exc:
            log.warning("schedule %s: tick %s not fired: %s", schedule.id, tick, exc)
            return None
        with contextlib.suppress(ScheduleDeleted):  # deleted meanwhile: its job stands
            self.book.change(schedule.id, lambda s: s.fire(tick, job_id, self.origin))
        return Fired(schedule.id, tick, job_id, created)

    def apply_declared(
        self, declared: Iterable[Declared], *, tenant: str, case_id: str, schedules: Schedules
    ) -> dict[str, str]:
        """Bring the code's schedules into the ledger under ``tenant``/``case_id``:
        created if absent, changed if the declaration changed, nothing if equal (a
        schedule deleted through the API stays deleted). What was done, by name (a
        declaration that cannot fire is refused, with the reason)."""
        done: dict[str, str] = {}
        origin = Origin(actor=CODE)
        for item in declared:
            definition = {
                "cron": item.cron,
                "zone": item.zone,
                "job_type": item.job_type,
                "case_id": case_id,
                "params": item.params,
                "catch_up": item.catch_up,
            }
            try:
                done[item.job_type] = self._apply(
                    tenant, item.job_type, definition, origin, schedules
                )
            except LedgerError as exc:  # the others are applied all the same
                done[item.job_type] = f"refused: {exc}"
        return done

    def _apply(
        self,
        tenant: str,
        name: str,
        definition: dict[str, Any],
        origin: Origin,
        schedules: Schedules,
    ) -> str:
        for _ in range(3):  # another scheduler may create it meanwhile
            try:
                existing = self.book.find(tenant, name)
            except ScheduleNotFound:
                try:
                    schedules.add(tenant, name, definition, paused=False, origin=origin)
                except ScheduleExists:
                    continue
                return "created"
            if existing.deleted:
                return "deleted"
            valid = schedules.validated(definition)
            changed = False

            def change(s: Schedule, valid: dict[str, Any] = valid) -> None:
                nonlocal changed
                changed = s.change(valid, origin)

            self.book.change(existing.id, change)
            return "changed" if changed else "unchanged"
        return "unchanged"
