"""Group commit: many callers' saves in one ledger transaction; and its reading twin,
many callers' reads of jobs in one query.

Each save to the event store takes a table lock for its transaction, so saves do
not scale with threads; they scale with batching. Callers (request threads, worker
threads) hand their aggregate to the writer and block; one writer thread takes what
has gathered — at most ``max_batch``, waiting at most ``max_wait_s`` for more — and
saves it all at once. A conflict anywhere in the batch aborts the transaction, so
then each member is saved alone and gets its own result or error.

A worker reads every job it starts. ``GroupRead`` gathers those reads the same way
and answers them from one query; with no wait, a lone read goes at once, and reads
only share a query when they arrive while the previous one runs.

A caller on an event loop hands its save (or read) over without blocking
(``save_async``, ``events_async``) and awaits an asyncio future of its own loop. The
serving thread settles a batch's futures of one loop with one call into that loop:
no thread-safe future (with its lock and condition) a caller, and one wake-up of the
loop a batch rather than one a caller.

Only the first caller of a batch wakes the serving thread: it then sleeps out the
wait and takes whatever has arrived, so the callers in between hand over their
work without a thread switch each. The wait is counted from the first caller's hand
over: one who arrived while the last batch was being written has waited part or all
of it already.

A wait pays only when someone comes: after ``FRUITLESS_WAITS`` waits in a row that
gathered no one (a lone client submitting one job at a time, a trickle far below
``1 / max_wait_s``), the writer writes a lone caller at once. Every ``PROBE_EVERY``-th
lone caller still waits, to see whether company comes now: many clients whose
requests reach the writer one at a time, each after the last one's commit, form no
batch of their own, and only a wait gathers them. The first batch with company ends
the lone writes. A lone caller then pays for its commit, not for company that is not
coming.

A batch is served in the context (contextvars) of its first caller: its queries
belong to that caller's trace and log context; a lone caller's, to its own."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, Generic, TypeVar
from uuid import UUID

log = logging.getLogger("jobledger.ledger")

# save(*events) -> recordings, each with .domain_event.originator_id and .notification.id
Save = Callable[..., Sequence[Any]]
# read(job ids) -> each found job's events, oldest first
ReadMany = Callable[[Sequence[UUID]], Mapping[UUID, Sequence[Any]]]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    job_id: UUID
    item: Item
    done: Future[Result] = field(default_factory=Future)
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    handed_over: float = field(default_factory=time.monotonic)

    def settle(self, result: Result | None = None, error: BaseException | None = None) -> None:
        """Give the caller its result or error; a caller that gave up (cancelled the
        future: a request whose client left) is skipped, and its work stands."""
        with contextlib.suppress(InvalidStateError):
            if error is not None:
                self.done.set_exception(error)
            else:
                self.done.set_result(result)  # type: ignore[arg-type]


@dataclass
class _AwaitedPending(_Pending[Item, Result]):
    """A caller on an event loop: settled on its loop, with the batch's others of that
    loop (``_settle_on_loops``)."""

    awaited: asyncio.Future[Result] | None = None
    outcome: tuple[Result | None, BaseException | None] | None = None

    def settle(self, result: Result | None = None, error: BaseException | None = None) -> None:
        self.outcome = (result, error)


def _settle_on_loops(batch: Sequence[_Pending[Any, Any]]) -> None:
    """One call into each loop that awaits members of ``batch``. A loop already closed
    (its process stopping) has no one left to answer; the work stands."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_AwaitedPending[Any, Any]]] = {}
    for p in batch:
        if isinstance(p, _AwaitedPending) and p.awaited is not None:
            by_loop.setdefault(p.awaited.get_loop(), []).append(p)
    for loop, members in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(_answer, members)


def _answer(members: Sequence[_AwaitedPending[Any, Any]]) -> None:
    for p in members:
        awaited, outcome = p.awaited, p.outcome
        if awaited is None or outcome is None or awaited.done():  # given up on
            continue
        result, error = outcome
        if error is not None:
            awaited.set_exception(error)
        else:
            awaited.set_result(result)


# Waits in a row that gathered no one, after which a lone caller is written at once.
# At a trickle where a wait finds company half the time, eight misses in a row come
# once in 256 batches, and the next batch with company ends them.
FRUITLESS_WAITS = 8
# While lone callers are written at once, one in this many still waits: a probe for
# company that comes only to a wait.
PROBE_EVERY = 16


class _Gathering(Generic[Item, Result]):
    """One thread that serves callers in batches: at most ``max_batch`` a time, waiting
    at most ``max_wait_s`` for more after the first, while waiting gathers anyone."""

    def __init__(self, name: str, *, max_batch: int, max_wait_s: float) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # Never a timed get: in CPython 3.11 SimpleQueue.get(timeout=...) can recompute
        # the timeout as negative and then wait with none, until the next put. With
        # every caller blocked on the batch being gathered no put comes, and the
        # writer hung for good (seen under load, gdb: PyThread_acquire_lock_timed(-25
        # us)). The serving thread blocks only for the first item, then sleeps.
        self._queue: SimpleQueue[_Pending[Item, Result] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.served = 0
        self._fruitless = 0  # waits in a row that gathered no one
        self._unwaited = 0  # lone callers written at once since the last wait

    def _hand_over(self, job_id: UUID, item: Item) -> Future[Result]:
        pending: _Pending[Item, Result] = _Pending(job_id, item)
        self._queue.put(pending)
        return pending.done

    def _hand_over_awaited(self, job_id: UUID, item: Item) -> asyncio.Future[Result]:
        """From a coroutine: the future is of the running loop, settled on it."""
        awaited: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put(_AwaitedPending(job_id, item, _NO_FUTURE, awaited=awaited))
        return awaited

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            first.context.run(self._serve, batch)
            _settle_on_loops(batch)
            self.batches += 1
            self.served += len(batch)

    def _gather(self, first: _Pending[Item, Result]) -> list[_Pending[Item, Result]]:
        batch = [first]
        # Wait for company until the first has waited ``max_wait_s`` since it was
        # handed over, not that long again after the writer took it: a caller who
        # arrived while the last batch was written has waited through that commit.
        # While waits gather no one, a lone caller goes at once but for a probe.
        wait_s = first.handed_over + self.max_wait_s - time.monotonic()
        waited = wait_s > 0 and self._worth_waiting()
        if waited:
            time.sleep(wait_s)
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        if len(batch) > 1:
            self._fruitless = 0
        elif waited:
            self._fruitless += 1
        return batch

    def _worth_waiting(self) -> bool:
        """Whether the first of a batch waits for company: while waits gather some,
        when others are queued behind it, and as one probe in ``PROBE_EVERY`` once
        ``FRUITLESS_WAITS`` waits in a row have gathered no one."""
        if self._fruitless < FRUITLESS_WAITS or not self._queue.empty():
            self._unwaited = 0
            return True
        self._unwaited = (self._unwaited + 1) % PROBE_EVERY
        return self._unwaited == 0

    def _serve(self, batch: list[_Pending[Item, Result]]) -> None:
        raise NotImplementedError


# An awaited pending's unused thread-safe future: created once, never settled.
_NO_FUTURE: Future[Any] = Future()


class GroupCommit(_Gathering[Sequence[Any], int]):
    def __init__(self, save: Save, *, max_batch: int = 500, max_wait_s: float = 0.002) -> None:
        self._save = save
        super().__init__("jobledger-writer", max_batch=max_batch, max_wait_s=max_wait_s)

    @property
    def saved(self) -> int:
        return self.served

    def save(self, aggregate: Any) -> int:
        """Save the aggregate's pending events with others'; return the ledger position
        of its last event (0 if it had none). Raises what its own save raised."""
        return self.save_later(aggregate).result()

    def save_later(self, aggregate: Any) -> Future[int]:
        """``save`` without waiting: the future gives what ``save`` would (a thread's
        future; a coroutine awaits ``save_async``)."""
        events = aggregate.collect_events()
        if not events:
            done: Future[int] = Future()
            done.set_result(0)
            return done
        return self._hand_over(aggregate.id, events)

    def save_async(self, aggregate: Any) -> asyncio.Future[int]:
        """``save`` for a coroutine: await the future (of the running loop)."""
        events = aggregate.collect_events()
        if not events:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            done.set_result(0)
            return done
        return self._hand_over_awaited(aggregate.id, events)

    def _serve(self, batch: list[_Pending[Sequence[Any], int]]) -> None:
        if len(batch) > 1:
            try:
                recordings = self._save(*(e for p in batch for e in p.item))
            except Exception as exc:  # noqa: BLE001 - retried one by one below
                log.debug("batch of %d failed (%r); saving one by one", len(batch), exc)
            else:
                positions = _last_positions(recordings)
                for p in batch:
                    p.settle(positions.get(p.job_id, 0))
                return
        for p in batch:
            try:
                positions = _last_positions(self._save(*p.item))
            except Exception as exc:  # noqa: BLE001 - the caller's own error
                p.settle(error=exc)
            else:
                p.settle(positions.get(p.job_id, 0))


class GroupRead(_Gathering[None, Sequence[Any]]):
    def __init__(self, read: ReadMany, *, max_batch: int = 500, max_wait_s: float = 0.0) -> None:
        self._read = read
        super().__init__("jobledger-reader", max_batch=max_batch, max_wait_s=max_wait_s)

    def events_later(self, job_id: UUID) -> Future[Sequence[Any]]:
        """``events`` without waiting (a thread's future; a coroutine awaits
        ``events_async``)."""
        return self._hand_over(job_id, None)

    def events_async(self, job_id: UUID) -> asyncio.Future[Sequence[Any]]:
        """``events`` for a coroutine: await the future (of the running loop)."""
        return self._hand_over_awaited(job_id, None)

    def events(self, job_id: UUID) -> Sequence[Any]:
        """The job's events, oldest first (none if there is no such job)."""
        return self.events_later(job_id).result()

    def _serve(self, batch: list[_Pending[None, Sequence[Any]]]) -> None:
        """One query for the batch; if it fails, one each, so that a job that cannot
        be read fails only its own caller."""
        if len(batch) > 1:
            try:
                found = self._read(_unique(p.job_id for p in batch))
            except Exception as exc:  # noqa: BLE001 - read one by one below
                log.debug("read of %d jobs failed (%r); reading one by one", len(batch), exc)
            else:
                for p in batch:
                    p.settle(found.get(p.job_id, ()))
                return
        for p in batch:
            try:
                p.settle(self._read([p.job_id]).get(p.job_id, ()))
            except Exception as exc:  # noqa: BLE001 - the caller's own error
                p.settle(error=exc)


def _unique(job_ids: Iterable[UUID]) -> list[UUID]:
    return list(dict.fromkeys(job_ids))


def _last_positions(recordings: Sequence[Any]) -> dict[UUID, int]:
    positions: dict[UUID, int] = {}
    for recording in recordings:
        positions[recording.domain_event.originator_id] = recording.notification.id
    return positions
