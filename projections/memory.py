"""An in-memory job view with the same contract as the PostgreSQL one, for unit tests."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import DataError, IntegrityError, Tracking

from domain.job import held_at_submission
from projections.projection import JobRow, Page, TenantFilter, Unprojectable, ViewChange


class MemoryJobView:
    def __init__(self) -> None:
        self._rows: dict[UUID, JobRow] = {}
        self._tracking: dict[str, int] = {}
        self._skipped: list[Unprojectable] = []
        self._lock = threading.Lock()
        # A value this view refuses, as PostgreSQL refuses NUL in text (for tests).
        self.refuse: str | None = None
        self.refuse_with: type[Exception] = DataError  # IntegrityError: as a CHECK would

    def apply(self, changes: Sequence[ViewChange], tracking: Tracking) -> None:
        with self._lock:
            last = self._tracking.get(tracking.application_name)
            if last is not None and tracking.notification_id <= last:
                msg = f"already applied {tracking.application_name} {tracking.notification_id}"
                raise IntegrityError(msg)
            rows = dict(self._rows)
            for change in changes:
                if self.refuse is not None and self.refuse in repr(change.values):
                    raise self.refuse_with("the view refuses this value")
                rows[change.job_id] = _changed(rows.get(change.job_id), change)
            self._rows = rows
            self._tracking[tracking.application_name] = tracking.notification_id

    def skip(self, unprojectable: Unprojectable, tracking: Tracking) -> None:
        with self._lock:
            self._skipped.append(unprojectable)
            self._tracking[tracking.application_name] = tracking.notification_id

    def unprojectable(self) -> list[Unprojectable]:
        return list(self._skipped)

    def held_due(self, *, by: datetime, range_s: float, limit: int) -> list[UUID]:
        rows = sorted(
            (
                r
                for r in self._rows.values()
                if r.status == "scheduled"
                and not r.handed_over
                and r.run_at is not None
                and r.run_at <= by
                and held_at_submission(r.submitted_at, r.run_at, range_s)
            ),
            key=lambda r: r.run_at or by,
        )
        return [r.job_id for r in rows[:limit]]

    def get(self, job_id: UUID) -> JobRow | None:
        return self._rows.get(job_id)

    def list_case(
        self,
        tenant: str,
        case_id: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        before = int(cursor) if cursor else None
        rows = sorted(
            (
                r
                for r in self._rows.values()
                if r.tenant == tenant
                and r.case_id == case_id
                and (status is None or r.status == status)
                and (before is None or r.submitted_position < before)
            ),
            key=lambda r: r.submitted_position,
            reverse=True,
        )
        page = rows[:limit]
        return Page(page, str(page[-1].submitted_position) if len(rows) > limit else None)

    def case_submissions(
        self, tenant: str, case_id: str, *, by: datetime, before: int | None, limit: int
    ) -> list[tuple[UUID, int]]:
        rows = sorted(
            (
                r
                for r in self._rows.values()
                if r.tenant == tenant
                and r.case_id == case_id
                and r.submitted_at <= by
                and (before is None or r.submitted_position < before)
            ),
            key=lambda r: r.submitted_position,
            reverse=True,
        )
        return [(r.job_id, r.submitted_position) for r in rows[:limit]]

    def list_tenant(
        self, tenant: str, where: TenantFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        before = int(cursor) if cursor else None
        rows = sorted(
            (
                r
                for r in self._rows.values()
                if r.tenant == tenant
                and where.accepts(r)
                and (before is None or r.submitted_position < before)
            ),
            key=lambda r: r.submitted_position,
            reverse=True,
        )
        page = rows[:limit]
        return Page(page, str(page[-1].submitted_position) if len(rows) > limit else None)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._tracking.get(application_name)

    def count_waiting(self, tenant: str) -> int:
        waiting = ("scheduled", "queued", "retry_scheduled")
        return sum(r.tenant == tenant and r.status in waiting for r in self._rows.values())


def _changed(row: JobRow | None, change: ViewChange) -> JobRow:
    values: dict[str, Any] = dict(change.values)
    if change.insert:
        return JobRow(job_id=change.job_id, **values)
    if row is None:
        msg = f"update of a job the view has not seen: {change.job_id}"
        raise LookupError(msg)
    return dataclasses.replace(row, **values)
