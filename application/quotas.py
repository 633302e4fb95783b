"""Per-tenant quotas on submitting: how fast (a token bucket) and how many jobs may
wait at once. One tenant's flood is refused (429 with Retry-After) before it fills
the ledger and the queues in front of everyone else's jobs.

Jobs are counted as the ledger counts them: a batch of n jobs takes n tokens, and the
jobs waiting are the tenant's scheduled (for later), queued and retry-scheduled jobs
in the job view, read at most once a second, plus those admitted since. Buckets and
counts are kept in a ``QuotaBook``: this process's memory, or (``jobledger gateway
--processes N``) memory the gateway's processes share (infra/shared_quotas.py), so N
processes admit what one would. Separate gateways, each with its own book, each admit
up to the rate."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Quota:
    submits_per_s: float = 0.0  # 0: no limit
    burst: int = 0  # submits at once above the rate (at least 1)
    max_waiting: int = 0  # 0: no limit


class QuotaExceeded(Exception):
    """The tenant's quota refuses this submission for now."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass
class QuotaSlot:
    """One tenant's bucket and count of waiting jobs; ``at`` and ``counted_at`` are
    ``time.monotonic`` readings (one clock for every process of the machine), below
    zero before the first."""

    tokens: float = 0.0
    at: float = -1.0
    waiting: int = 0
    counted_at: float = -1.0


class QuotaBook(Protocol):
    def locked(self, tenant: str) -> AbstractContextManager[QuotaSlot]:
        """The tenant's slot, held by no other thread or process until the block ends;
        what the block changes in it is kept."""
        ...


class LocalQuotaBook:
    """The slots in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, QuotaSlot] = {}

    @contextlib.contextmanager
    def locked(self, tenant: str) -> Iterator[QuotaSlot]:
        with self._lock:
            yield self._slots.setdefault(tenant, QuotaSlot())


class TenantQuotas:
    def __init__(
        self,
        default: Quota,
        per_tenant: Mapping[str, Quota],
        waiting: Callable[[str], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        count_every_s: float = 1.0,
        book: QuotaBook | None = None,
    ) -> None:
        self.default = default
        self.per_tenant = dict(per_tenant)
        self.waiting = waiting  # the tenant's waiting jobs, from the view (blocking)
        self.clock = clock
        self.count_every_s = count_every_s
        self.book: QuotaBook = book if book is not None else LocalQuotaBook()

    def quota(self, tenant: str) -> Quota:
        return self.per_tenant.get(tenant, self.default)

    def counts_first(self, tenant: str) -> bool:
        """Would ``admit`` read the view (blocking) before it answers?"""
        return self._count_due(tenant) is not None

    def _count_due(self, tenant: str) -> float | None:
        """If the tenant's waiting jobs are to be counted again: when they last were."""
        if not self.quota(tenant).max_waiting:
            return None
        with self.book.locked(tenant) as slot:
            stale = slot.counted_at < 0 or self.clock() - slot.counted_at >= self.count_every_s
            return slot.counted_at if stale else None

    def admit(self, tenant: str, jobs: int = 1) -> None:
        """Take ``jobs`` from the tenant's quota, or raise QuotaExceeded. The count of
        waiting jobs is checked and raised, and the tokens taken, while the tenant's
        slot is held once: two processes cannot both take the last place."""
        quota = self.quota(tenant)
        if not (quota.max_waiting or quota.submits_per_s):
            return
        last_counted = self._count_due(tenant)
        if last_counted is not None:  # counted outside the slot: the view's read blocks
            now = self.clock()
            waiting = self.waiting(tenant)
            with self.book.locked(tenant) as slot:
                if slot.counted_at == last_counted:  # else another counted meanwhile, and
                    slot.waiting, slot.counted_at = waiting, now  # has admitted since
        with self.book.locked(tenant) as slot:
            if quota.max_waiting and slot.waiting + jobs > quota.max_waiting:
                raise QuotaExceeded(
                    f"tenant {tenant} has {slot.waiting} jobs waiting, at most {quota.max_waiting}",
                    max(self.count_every_s, 1.0),
                )
            if quota.submits_per_s:
                self._take_tokens(slot, tenant, quota, jobs)
            if quota.max_waiting:
                slot.waiting += jobs

    def _take_tokens(self, slot: QuotaSlot, tenant: str, quota: Quota, jobs: int) -> None:
        burst = max(quota.burst, 1, jobs)
        now = self.clock()
        if slot.at < 0:  # the tenant's first submit
            tokens = float(burst)
        else:
            refill = max(0.0, now - slot.at) * quota.submits_per_s
            tokens = min(float(burst), slot.tokens + refill)
        if tokens < jobs:
            slot.tokens, slot.at = tokens, now
            raise QuotaExceeded(
                f"tenant {tenant} submits at most {quota.submits_per_s:g} jobs a second",
                (jobs - tokens) / quota.submits_per_s,
            )
        slot.tokens, slot.at = tokens - jobs, now


def retry_after(seconds: float) -> str:
    """A Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
