"""The retry policy: how many attempts a job gets and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: the delay before attempt n+1 is drawn
    uniformly from [0, min(max_delay_s, base_delay_s * factor ** (n - 1))].

    ``max_attempts`` is written on the job when it is submitted; from then on the job
    itself (domain/job.py) says whether an attempt is left. The policy says only
    whether a failure is worth another attempt, and when."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 300.0

    def decide(
        self,
        attempt: int,
        *,
        retryable: bool,
        requested_delay_s: float | None = None,
        rand: random.Random | None = None,
    ) -> float | None:
        """The delay before the attempt after ``attempt``, or None when the failure
        is not worth another one. A delay the handler asked for (``Retry(delay_s=)``)
        wins over the backoff."""
        if not retryable:
            return None
        if requested_delay_s is not None:
            return max(requested_delay_s, 0.0)
        return self.delay_s(attempt, rand)

    def delay_s(self, attempt: int, rand: random.Random | None = None) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * self.factor ** max(attempt - 1, 0))
        return (rand or random).uniform(0, ceiling)
