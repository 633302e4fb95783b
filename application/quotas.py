"""Per-tenant quotas on submitting: how fast (a token bucket) and how many jobs may
wait at once. One tenant's flood is refused (429 with Retry-After) before it fills
the ledger and the queues in front of everyone else's jobs.

Jobs are counted as the ledger counts them: a batch of n jobs takes n tokens, and the
jobs waiting are the tenant's queued and retry-scheduled jobs in the job view, read
at most once a second, plus those this process admitted since. The buckets are this
process's own: with several gateway processes, each admits up to the rate."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


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


class TenantQuotas:
    def __init__(
        self,
        default: Quota,
        per_tenant: Mapping[str, Quota],
        waiting: Callable[[str], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        count_every_s: float = 1.0,
    ) -> None:
        self.default = default
        self.per_tenant = dict(per_tenant)
        self.waiting = waiting  # the tenant's waiting jobs, from the view (blocking)
        self.clock = clock
        self.count_every_s = count_every_s
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._counts: dict[str, tuple[int, float]] = {}  # tenant -> (waiting, counted at)

    def quota(self, tenant: str) -> Quota:
        return self.per_tenant.get(tenant, self.default)

    def counts_first(self, tenant: str) -> bool:
        """Would ``admit`` read the view (blocking) before it answers?"""
        if not self.quota(tenant).max_waiting:
            return False
        counted = self._counts.get(tenant)
        return counted is None or self.clock() - counted[1] >= self.count_every_s

    def admit(self, tenant: str, jobs: int = 1) -> None:
        """Take ``jobs`` from the tenant's quota, or raise QuotaExceeded."""
        quota = self.quota(tenant)
        if quota.max_waiting:
            self._check_waiting(tenant, quota, jobs)
        if quota.submits_per_s:
            self._take_tokens(tenant, quota, jobs)
        if quota.max_waiting:
            with self._lock:
                waiting, at = self._counts[tenant]
                self._counts[tenant] = (waiting + jobs, at)

    def _check_waiting(self, tenant: str, quota: Quota, jobs: int) -> None:
        now = self.clock()
        counted = self._counts.get(tenant)
        if counted is None or now - counted[1] >= self.count_every_s:
            counted = (self.waiting(tenant), now)
            with self._lock:
                self._counts[tenant] = counted
        if counted[0] + jobs > quota.max_waiting:
            raise QuotaExceeded(
                f"tenant {tenant} has {counted[0]} jobs waiting, at most {quota.max_waiting}",
                max(self.count_every_s, 1.0),
            )

    def _take_tokens(self, tenant: str, quota: Quota, jobs: int) -> None:
        burst = max(quota.burst, 1, jobs)
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(tenant, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * quota.submits_per_s)
            if tokens < jobs:
                self._buckets[tenant] = (tokens, now)
                wait_s = (jobs - tokens) / quota.submits_per_s
                raise QuotaExceeded(
                    f"tenant {tenant} submits at most {quota.submits_per_s:g} jobs a second",
                    wait_s,
                )
            self._buckets[tenant] = (tokens - jobs, now)


def retry_after(seconds: float) -> str:
    """A Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
