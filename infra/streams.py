"""The gateway's live streams: the hub, the ledger reads a resuming client needs,
and the one follower per process that feeds the hub."""

from __future__ import annotations

import asyncio
from typing import Any

from domain.ledger import JobLedger
from domain.schedule import is_schedule_event
from gateway.hub import StreamHub
from gateway.sse import Streams
from gateway.stream import Feed, Page
from infra import ledger_store
from infra.events_table import EventsTable
from infra.follower import LedgerFollower
from infra.settings import Settings
from projections.job_view import PostgresJobView


class PostgresLedgerHistory:
    """A feed's past, read from the events table. A job's events are read by its id
    (the primary key's first column); a case's or tenant's by scanning the ledger
    after the position, a page at a time, and keeping what the feed takes."""

    def __init__(self, ledger: JobLedger, view: PostgresJobView) -> None:
        self.table = EventsTable(ledger, view.table)
        self.view = view
        self.application_name = ledger.name

    def head(self) -> int:
        return self.table.head()

    def after(self, feed: Feed, position: int, limit: int) -> Page:
        if feed.job_id is not None:
            events = self.table.read(self.table.of_job_after, (feed.job_id, position, limit))
        else:
            projected = self.view.max_tracking_id(self.application_name) or 0
            if position < projected:
                return self._through_the_view(feed, position, projected, limit)
            # Past what the view has projected (milliseconds of events): scanned.
            events = self.table.read(self.table.after, (position, limit))
        scanned_to = events[-1][1] if events else position
        return Page(events=_taken(feed, events), scanned_to=scanned_to, more=len(events) == limit)

    def _through_the_view(self, feed: Feed, position: int, projected: int, limit: int) -> Page:
        """The feed's events in (position, projected], by the tenant's own jobs."""
        params = {
            "tenant": feed.tenant,
            "case_id": feed.case_id,
            "after": position,
            "until": projected,
            "limit": limit,
        }
        events = self.table.read(self.table.of_tenant_between, params)
        full = len(events) == limit
        scanned_to = events[-1][1] if full else projected
        return Page(events=_taken(feed, events), scanned_to=scanned_to, more=True)


class PostgresAuditLog:
    """A tenant's events for auditors, in ledger order, a page at a time."""

    def __init__(self, ledger: JobLedger, view: PostgresJobView) -> None:
        self.table = EventsTable(ledger, view.table)

    def head(self) -> int:
        return self.table.head()

    def page(
        self,
        tenant: str,
        *,
        after: int,
        until: int,
        case_id: str | None,
        job_type: str | None,
        scan: int,
    ) -> tuple[list[tuple[Any, int]], int]:
        """By position, every tenant's events decoded and the others' dropped: each
        event names its tenant, case and type, so no view is asked (a job the
        projector has not reached is in it), and each page costs the same. The
        tenant's schedules' events are kept too, unless a case or a job type is asked
        for: those filters are of jobs (a schedule's change names neither)."""
        events = self.table.read(self.table.after_until, (after, until, scan))
        jobs_only = case_id is not None or job_type is not None
        kept = [
            (event, at)
            for event, at in events
            if event.tenant == tenant
            and (
                not jobs_only
                if is_schedule_event(event)
                else (case_id is None or event.case_id == case_id)
                and (job_type is None or event.job_type == job_type)
            )
        ]
        scanned_to = events[-1][1] if len(events) == scan else until
        return kept, scanned_to


def _taken(feed: Feed, events: list[Any]) -> list[Any]:
    return [
        (event, at)
        for event, at in events
        if not is_schedule_event(event)
        and feed.accepts(
            getattr(event, "tenant", ""), getattr(event, "case_id", ""), event.originator_id
        )
    ]


def open_streams(settings: Settings, ledger: JobLedger) -> Streams:
    """The hub starts at the ledger's present: a client reads anything older from the
    ledger itself when it resumes."""
    options = settings.stream
    view = ledger_store.open_view(settings.postgres)
    hub = StreamHub(
        position=ledger.recorder.max_notification_id() or 0,
        client_queue_size=options.client_queue_size,
        heartbeat_interval_s=options.heartbeat_interval_s,
    )
    return Streams(
        hub=hub,
        history=PostgresLedgerHistory(ledger, view),
        reconnect_ms=options.reconnect_ms,
        page_size=options.catch_up_page_size,
        max_catch_up_events=options.max_catch_up_events,
    )


async def feed_hub(hub: StreamHub, follower: LedgerFollower) -> None:
    """Publish every ledger event after the hub's position to the hub, and its
    keep-alives, forever."""
    beating = asyncio.create_task(hub.heartbeats(), name="stream keep-alives")
    try:
        async for batch in follower.batches(hub.position):
            hub.publish(batch)
    finally:
        beating.cancel()
