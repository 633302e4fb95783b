"""Fans the ledger out to every open stream of this gateway process.

One follower per process feeds ``StreamHub.publish`` with the ledger's new events
in order; each event is encoded once and offered to the subscriptions whose feed
takes it. A subscription buffers at most ``limit`` events: a client that cannot
keep up is cut off (its buffer dropped), never slowing the others, and resumes by
``Last-Event-ID``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from domain.schedule import is_schedule_event
from gateway.stream import Feed, StreamEvent, to_stream_event


class Subscription:
    def __init__(self, feed: Feed, limit: int) -> None:
        self.feed = feed
        self.limit = limit
        self.queue: deque[StreamEvent] = deque()
        self.wake = asyncio.Event()
        self.cut = asyncio.Event()  # the client fell behind by more than ``limit``
        self.closed = False  # the gateway is stopping
        self.beat = False  # a keep-alive is due

    def offer(self, event: StreamEvent) -> None:
        if self.cut.is_set():
            return
        if len(self.queue) >= self.limit:
            self.queue.clear()
            self.cut.set()
        else:
            self.queue.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def keep_alive(self) -> None:
        self.beat = True
        self.wake.set()


class StreamHub:
    def __init__(
        self, *, position: int, client_queue_size: int, heartbeat_interval_s: float = 15.0
    ) -> None:
        self.position = position  # every event after this one will be published
        self.client_queue_size = client_queue_size
        self.heartbeat_interval_s = heartbeat_interval_s
        self.cut_off = 0  # subscriptions cut off so far
        self.subscribed = asyncio.Event()  # set by every subscribe: wakes the follower
        self._by_job: dict[UUID, set[Subscription]] = {}
        self._by_case: dict[tuple[str, str], set[Subscription]] = {}
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._closed = False

    def __len__(self) -> int:
        return sum(len(s) for index in self._indexes() for s in index.values())

    def listened_to(self) -> bool:
        """Whether any stream is open: without one, the follower need not decode."""
        return bool(self._by_job or self._by_case or self._by_tenant)

    def subscribe(self, feed: Feed) -> Subscription:
        """From now on, every published event the feed takes is buffered for it."""
        subscription = Subscription(feed, self.client_queue_size)
        if self._closed:
            subscription.close()
        index, key = self._slot(feed)
        index.setdefault(key, set()).add(subscription)
        self.subscribed.set()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        index, key = self._slot(subscription.feed)
        members = index.get(key)
        if members is not None:
            members.discard(subscription)
            if not members:
                del index[key]
        if subscription.cut.is_set():
            self.cut_off += 1

    def publish(self, batch: Sequence[tuple[Any, int]]) -> None:
        """The ledger's next events, in order (from the follower). An event is None
        where the follower did not decode it, no stream being open then; a stream
        opened since began after them (one resuming read them in its catch-up). The
        follower may also pass over many positions at once, as ``(None, head)``."""
        for event, position in batch:
            if position <= self.position:
                continue
            self.position = position
            if event is None or not self._wanted(event):
                continue
            encoded = to_stream_event(event, position)
            for subscription in self._takers(encoded):
                if subscription.feed.accepts(encoded.tenant, encoded.case_id, encoded.job_id):
                    subscription.offer(encoded)

    def close(self) -> None:
        """End every stream (the gateway is stopping)."""
        self._closed = True
        for index in self._indexes():
            for members in index.values():
                for subscription in members:
                    subscription.close()

    async def heartbeats(self) -> None:
        """Every ``heartbeat_interval_s``, a keep-alive for every stream: one timer for
        them all, rather than one per stream per event."""
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            for index in self._indexes():
                for members in index.values():
                    for subscription in members:
                        subscription.keep_alive()

    def _wanted(self, event: Any) -> bool:
        tenant = getattr(event, "tenant", None)
        if tenant is None or is_schedule_event(event):  # streams follow jobs
            return False
        return (
            event.originator_id in self._by_job
            or (tenant, event.case_id) in self._by_case
            or tenant in self._by_tenant
        )

    def _takers(self, event: StreamEvent) -> list[Subscription]:
        return [
            *self._by_job.get(event.job_id, ()),
            *self._by_case.get((event.tenant, event.case_id), ()),
            *self._by_tenant.get(event.tenant, ()),
        ]

    def _slot(self, feed: Feed) -> tuple[dict[Any, set[Subscription]], Any]:
        if feed.job_id is not None:
            return self._by_job, feed.job_id
        if feed.case_id is not None:
            return self._by_case, (feed.tenant, feed.case_id)
        return self._by_tenant, feed.tenant

    def _indexes(self) -> tuple[dict[Any, set[Subscription]], ...]:
        return (self._by_job, self._by_case, self._by_tenant)
