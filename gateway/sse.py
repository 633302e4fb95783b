"""Opening one stream: catch up from the ledger, then join the live feed.

The subscription to the hub is made first, so every live event from that moment
on is buffered; then the ledger is read after ``Last-Event-ID`` and sent; then the
buffer is sent, skipping what the catch-up already sent (positions at or below the
last one sent). No event is missed and none is sent twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio
from fastapi import Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.hub import StreamHub, Subscription
from gateway.stream import Feed, LedgerHistory, StreamEvent, to_stream_event

KEEP_ALIVE = b": keep-alive\n\n"
# A client cut off for falling behind gets this long to take the end of its stream.
CUT_OFF_GRACE_S = 1.0


@dataclass(frozen=True)
class Streams:
    """What the streaming routes are given. Built by infra/bootstrap.py."""

    hub: StreamHub
    history: LedgerHistory
    reconnect_ms: int = 1000
    page_size: int = 500
    # How far behind the ledger a case or tenant feed may resume: its catch-up scans
    # every event after Last-Event-ID (all tenants), so an old id would be a full scan.
    max_catch_up_events: int = 100_000


class ResumeTooOld(Exception):
    """Last-Event-ID is further behind the ledger than a feed resumes from."""


@dataclass(frozen=True)
class Replayed:
    events: list[StreamEvent]
    scanned_to: int
    more: bool


def read_page(streams: Streams, feed: Feed, after: int) -> Replayed:
    """One page of the feed's past, encoded (blocking: run it in a thread)."""
    page = streams.history.after(feed, after, streams.page_size)
    events = [to_stream_event(event, position) for event, position in page.events]
    return Replayed(events, page.scanned_to, page.more)


class EventStreamResponse(StreamingResponse):
    """An SSE response that ends when the client goes away, when the stream ends,
    or when the hub cuts the client off for falling behind; it always unsubscribes."""

    def __init__(
        self, frames: AsyncIterator[bytes], hub: StreamHub, subscription: Subscription
    ) -> None:
        super().__init__(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.hub = hub
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = False

        async def respond() -> None:
            nonlocal completed
            await self.stream_response(send)
            completed = True

        try:
            async with anyio.create_task_group() as group:

                async def until(run: Callable[[], Awaitable[object]]) -> None:
                    await run()
                    group.cancel_scope.cancel()

                group.start_soon(until, respond)
                group.start_soon(until, partial(self.listen_for_disconnect, receive))
                group.start_soon(until, partial(self.subscription.cut.wait))
            # A response that ended by itself in the same turn as a cut-off needs no
            # second end.
            if self.subscription.cut.is_set() and not completed:
                # End the response if the client takes it soon; otherwise the
                # server closes the connection once its buffers drain.
                with anyio.move_on_after(CUT_OFF_GRACE_S):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.hub.unsubscribe(self.subscription)


async def open_stream(
    streams: Streams, feed: Feed, after: int | None, *, finished: bool = False
) -> Response:
    """The stream of ``feed`` after ``after`` (None: from now on). For a job feed, a
    job already ``finished`` with nothing after ``after`` answers 204, which tells an
    EventSource not to reconnect."""
    if feed.job_id is None and after is not None:
        # The ledger's own head: the hub's position lags it while no stream is open.
        behind = await asyncio.to_thread(streams.history.head) - after
        if behind > streams.max_catch_up_events:
            raise ResumeTooOld(
                f"Last-Event-ID is {behind} events behind the ledger, more than the "
                f"{streams.max_catch_up_events} a feed resumes from: read the jobs' state "
                "over REST and reconnect without Last-Event-ID"
            )
    subscription = streams.hub.subscribe(feed)
    try:
        first = None
        if after is not None:
            first = await asyncio.to_thread(read_page, streams, feed, after)
    except BaseException:
        streams.hub.unsubscribe(subscription)
        raise
    if finished and first is not None and not first.events:
        streams.hub.unsubscribe(subscription)
        return Response(status_code=204)
    frames = _frames(streams, subscription, after or 0, first)
    return EventStreamResponse(frames, streams.hub, subscription)


async def _frames(
    streams: Streams, subscription: Subscription, after: int, first: Replayed | None
) -> AsyncIterator[bytes]:
    yield f"retry: {streams.reconnect_ms}\n\n".encode()
    single_job = subscription.feed.job_id is not None
    last = after
    page = first
    ended = False
    while page is not None:
        for event in page.events:
            yield event.frame
            last, ended = event.position, event.terminal
        if not page.more:
            break
        page = await asyncio.to_thread(read_page, streams, subscription.feed, page.scanned_to)
    if single_job and ended:
        return
    async for live in _live(subscription):
        if live is None:
            yield KEEP_ALIVE
            continue
        if live.position <= last:
            continue  # already sent by the catch-up
        yield live.frame
        last = live.position
        if single_job and live.terminal:
            return


async def _live(subscription: Subscription) -> AsyncIterator[StreamEvent | None]:
    """The subscription's events as they come; None when a keep-alive is due."""
    while not subscription.closed and not subscription.cut.is_set():
        if subscription.queue:
            yield subscription.queue.popleft()
        elif subscription.beat:
            subscription.beat = False
            yield None
        else:
            subscription.wake.clear()
            await subscription.wake.wait()
