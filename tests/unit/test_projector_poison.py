"""One event the view cannot store never stops the projection: it is recorded as
unprojectable, with its position, and the projector goes on (it stopped for good, for
every tenant)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import IntegrityError

from domain.job import Job
from domain.origin import Origin
from projections.memory import MemoryJobView
from projections.runner import Projector

W = Origin("w1")


def events_of(n: int) -> list[Any]:
    job = Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="segment",
        params={},
        pool="default",
        max_attempts=1,
        origin=Origin("alice"),
    )
    job.start(1, "w1", W)
    job.report_progress(10, f"step {n}", W)
    job.succeed({"n": n}, W)
    return list(job.collect_events())


class Source:
    def __init__(self, batches: Sequence[Sequence[tuple[Any, int]]]) -> None:
        self.batches_ = batches
        self.done = asyncio.Event()

    async def batches(self, after: int | None) -> AsyncIterator[Sequence[tuple[Any, int]]]:
        for batch in self.batches_:
            yield batch
        self.done.set()
        await asyncio.Event().wait()


async def test_an_event_the_view_refuses_is_recorded_and_the_rest_are_projected() -> None:
    good, bad, later = events_of(1), events_of(2), events_of(3)
    positioned = list(enumerate([*good, *bad, *later], start=1))
    batch = [(event, position) for position, event in positioned]
    view = MemoryJobView()
    view.refuse = "step 2"  # as PostgreSQL refuses a NUL in text
    source = Source([batch[:6], batch[6:]])
    projector = Projector(source=source, view=view, application_name="JobLedger")

    running = asyncio.create_task(projector.run())
    await asyncio.wait_for(source.done.wait(), 5)
    running.cancel()

    [skipped] = view.unprojectable()
    assert (skipped.position, skipped.event) == (7, "ProgressReported")
    assert skipped.reason == "DataError"
    assert view.max_tracking_id("JobLedger") == 12
    for events in (good, bad, later):
        row = view.get(events[0].originator_id)
        assert row is not None and row.status == "succeeded"


async def test_an_event_refused_by_a_constraint_is_set_aside_not_taken_as_applied() -> None:
    """A constraint's refusal (NOT NULL, CHECK: an IntegrityError, like a position
    applied twice) is not "already applied": the batch's other events are projected
    and the refused one is set aside, as with any other refusal."""
    good, bad, later = events_of(1), events_of(2), events_of(3)
    batch = [(event, n) for n, event in enumerate([*good, *bad, *later], start=1)]
    view = MemoryJobView()
    view.refuse, view.refuse_with = "step 2", IntegrityError
    source = Source([batch[:6], batch[6:]])
    projector = Projector(source=source, view=view, application_name="JobLedger")

    running = asyncio.create_task(projector.run())
    await asyncio.wait_for(source.done.wait(), 5)
    running.cancel()

    [skipped] = view.unprojectable()
    assert (skipped.position, skipped.event) == (7, "ProgressReported")
    for events in (good, bad, later):
        row = view.get(events[0].originator_id)
        assert row is not None and row.status == "succeeded"
