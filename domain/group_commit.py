"""Group commit: many callers' saves in one ledger transaction.

Each save to the event store takes a table lock for its transaction, so saves do
not scale with threads; they scale with batching. Callers (request threads, worker
threads) hand their aggregate to the writer and block; one writer thread takes what
has gathered — at most ``max_batch``, waiting at most ``max_wait_s`` for more — and
saves it all at once. A conflict anywhere in the batch aborts the transaction, so
then each member is saved alone and gets its own result or error."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any
from uuid import UUID

log = logging.getLogger("jobledger.ledger")

# save(*events) -> recordings, each with .domain_event.originator_id and .notification.id
Save = Callable[..., Sequence[Any]]


@dataclass
class _Pending:
    job_id: UUID
    events: Sequence[Any]
    done: Future[int] = field(default_factory=Future)


class GroupCommit:
    def __init__(self, save: Save, *, max_batch: int = 500, max_wait_s: float = 0.002) -> None:
        self._save = save
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # Not SimpleQueue: in CPython 3.11 its get(timeout=...) can recompute the
        # timeout as negative and then wait with none, until the next put. Here every
        # caller is blocked on the batch being gathered, so no put comes: the writer
        # hung for good (seen under load, gdb: PyThread_acquire_lock_timed(-25 us)).
        self._queue: Queue[_Pending | None] = Queue()
        self._thread = threading.Thread(target=self._run, name="jobledger-writer", daemon=True)
        self._thread.start()
        self.batches = 0
        self.saved = 0

    def save(self, aggregate: Any) -> int:
        """Save the aggregate's pending events with others'; return the ledger position
        of its last event (0 if it had none). Raises what its own save raised."""
        events = aggregate.collect_events()
        if not events:
            return 0
        pending = _Pending(aggregate.id, events)
        self._queue.put(pending)
        return pending.done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            self._write(batch)
            self.batches += 1
            self.saved += len(batch)

    def _gather(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _write(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                recordings = self._save(*(e for p in batch for e in p.events))
            except Exception as exc:  # noqa: BLE001 - retried one by one below
                log.debug("batch of %d failed (%r); saving one by one", len(batch), exc)
            else:
                positions = _last_positions(recordings)
                for p in batch:
                    p.done.set_result(positions.get(p.job_id, 0))
                return
        for p in batch:
            try:
                positions = _last_positions(self._save(*p.events))
            except Exception as exc:  # noqa: BLE001 - the caller's own error
                p.done.set_exception(exc)
            else:
                p.done.set_result(positions.get(p.job_id, 0))


def _last_positions(recordings: Sequence[Any]) -> dict[UUID, int]:
    positions: dict[UUID, int] = {}
    for recording in recordings:
        positions[recording.domain_event.originator_id] = recording.notification.id
    return positions
