"""The dispatcher: the ledger is the outbox. It follows the ledger from its tracked
position and publishes one delivery per event that calls for one, with publisher
confirms. Reading and confirming overlap: the next batch is read and published
while earlier ones await their confirms, and a second task records, in ledger
order, the position up to which every publish is confirmed (at most every
``record_interval_s``). A crash between the publish and the record republishes;
the worker drops the duplicate (the start of an attempt is recorded once). Each
record is a transaction: at a trickle of jobs, recorded every 50 ms, it was nearly
one more commit a job, for a position that only a crash reads back. A refused
publish stops the dispatcher at once, not at the end of the record's interval."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractExchange
from eventsourcing.persistence import Tracking
from opentelemetry.trace import SpanKind

from application.delivery import CONTENT_TYPE, Delivery
from application.lanes import Lane, TenantShares
from application.outbox import BroadcastCancel, Send, messages_shared_fairly
from consumers.messages import delivery_message
from consumers.routing import Names
from consumers.telemetry import current_traceparent, messaging_span

log = logging.getLogger("jobledger.dispatcher")
# How long a stopping dispatcher tries to record the position it published up to.
FINAL_RECORD_S = 5.0
# The position is recorded at most this often: after a crash (not a stop, which
# records what is confirmed) at most this long's publishes go out again, and the
# workers drop them.
RECORD_INTERVAL_S = 0.5


class EventSource(Protocol):
    def batches(self, after: int | None) -> AsyncIterator[Sequence[tuple[Any, int]]]: ...


class Positions(Protocol):
    def max_tracking_id(self, application_name: str) -> int | None: ...

    def insert_tracking(self, tracking: Tracking) -> None: ...


class Dispatcher:
    def __init__(
        self,
        *,
        source: EventSource,
        positions: Positions,
        application_name: str,
        names: Names,
        work_exchange: AbstractExchange,
        delay_exchange: AbstractExchange,
        control_exchange: AbstractExchange,
        publish_window: int = 256,
        batches_in_flight: int = 4,
        record_interval_s: float = RECORD_INTERVAL_S,
        shares: TenantShares | None = None,
        on_sent: Callable[[], None] = lambda: None,
    ) -> None:
        self.source = source
        self.positions = positions
        self.application_name = application_name
        self.names = names
        self.work_exchange = work_exchange
        self.delay_exchange = delay_exchange
        self.control_exchange = control_exchange
        self.window = asyncio.Semaphore(publish_window)
        self.batches_in_flight = batches_in_flight
        self.record_interval_s = record_interval_s
        self.shares = shares or TenantShares()
        self.on_sent = on_sent  # told of each batch that sends a job
        self.published = 0
        # Batches read and published, in ledger order, not yet recorded: each with
        # its last position and its publishes' confirms.
        self._unrecorded: deque[tuple[int, asyncio.Future[Any]]] = deque()
        self._publishes: set[asyncio.Task[None]] = set()  # every publish not yet ended
        self._read_more = asyncio.Event()
        self._refused = asyncio.Event()  # a batch's publish failed: stop, not sleep on

    async def run(self) -> None:
        after = await asyncio.to_thread(self.positions.max_tracking_id, self.application_name)
        log.info("dispatching from ledger position %s", after or 0)
        self._unrecorded.clear()
        self._refused.clear()
        reading = asyncio.create_task(self._dispatch(after), name="dispatch")
        recording = asyncio.create_task(self._record(), name="record positions")
        try:
            done, _ = await asyncio.wait({reading, recording}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a refused publish or a lost store stops the dispatcher
        finally:
            for task in (reading, recording):
                task.cancel()
            await asyncio.gather(reading, recording, return_exceptions=True)
            # Stopping: keep what is confirmed, unless the ledger cannot take it soon
            # (PostgreSQL down: its pool would wait out its own timeout, and the stop
            # with it). Not recorded, those batches are published again at the next
            # start, and the workers, deciding from the ledger, run none of them twice.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(FINAL_RECORD_S):
                    await self._record_confirmed()
            for publish in self._publishes:
                publish.cancel()
            await asyncio.gather(
                *self._publishes, *(p for _, p in self._unrecorded), return_exceptions=True
            )
            self._unrecorded.clear()

    async def _dispatch(self, after: int | None) -> None:
        async for batch in self.source.batches(after):
            now = datetime.now(UTC)
            messages = [
                m
                for event, _ in batch
                if event is not None
                for m in messages_shared_fairly(
                    event, now, self.shares, range_s=self.names.max_delay_s
                )
            ]
            publishes = [asyncio.create_task(self._publish(m)) for m in messages]
            for publish in publishes:
                self._publishes.add(publish)
                publish.add_done_callback(self._publishes.discard)
            published = asyncio.gather(*publishes)
            published.add_done_callback(self._refused_if_failed)
            self._unrecorded.append((batch[-1][1], published))
            self._read_more.set()
            sent = sum(isinstance(m, Send) for m in messages)
            if sent:
                self.published += sent
                self.on_sent()
            while True:
                unconfirmed = [p for _, p in self._unrecorded if not p.done()]
                if len(unconfirmed) <= self.batches_in_flight:
                    break
                await asyncio.wait(unconfirmed[:1])

    async def _record(self) -> None:
        while True:
            if not self._unrecorded:
                self._read_more.clear()
                await self._read_more.wait()
                continue
            # Wait without awaiting the batch itself: cancelling this task must not
            # cancel its publishes, whose confirms the stop still records.
            oldest = self._unrecorded[0][1]
            await asyncio.wait([oldest])
            oldest.result()  # raises if the broker refused a publish
            await self._record_confirmed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.record_interval_s):
                    await self._refused.wait()

    def _refused_if_failed(self, published: asyncio.Future[Any]) -> None:
        if not published.cancelled() and published.exception() is not None:
            self._refused.set()

    async def _record_confirmed(self) -> None:
        """Record the position of the last batch before the first one still awaiting
        a confirm, or refused, or cancelled (nothing, if that is the oldest)."""
        position = None
        while self._unrecorded:
            last, publishing = self._unrecorded[0]
            if not publishing.done() or publishing.cancelled() or publishing.exception():
                break
            self._unrecorded.popleft()
            position = last
        if position is not None:
            tracking = Tracking(self.application_name, position)
            await asyncio.to_thread(self.positions.insert_tracking, tracking)

    async def _publish(self, message: Send | BroadcastCancel) -> None:
        match message:
            case Send(delivery, delay_s, lane):
                await self.publish(delivery, delay_s, lane)
            case BroadcastCancel(job_id):
                await self.broadcast_cancel(job_id)

    async def publish(self, delivery: Delivery, delay: float = 0, lane: Lane = Lane.NORMAL) -> None:
        """Publish to ``lane`` and wait for the broker's confirm (raises if it refuses)."""
        delay_s = self.names.clamp_delay(delay)
        exchange = self.delay_exchange if delay_s else self.work_exchange
        with messaging_span(
            "publish", SpanKind.PRODUCER, delivery, exchange.name, logs=False
        ) as span:
            span.set_attribute("jobledger.delay_s", delay_s)
            span.set_attribute("jobledger.lane", lane.value)
            message = delivery_message(delivery, delay_s, current_traceparent(delivery.traceparent))
            async with self.window:
                await exchange.publish(
                    message,
                    routing_key=self.names.routing_key(delivery.pool, delay_s, lane),
                    mandatory=True,
                )

    async def broadcast_cancel(self, job_id: UUID) -> None:
        """Tell every worker that a running job was asked to stop. Best effort: the
        request is in the ledger, and workers also find it there."""
        message = aio_pika.Message(
            json.dumps({"job_id": str(job_id)}).encode(),
            content_type=CONTENT_TYPE,
            headers={"x-job-id": str(job_id)},
        )
        async with self.window:
            await self.control_exchange.publish(message, routing_key="cancel")
