"""The retry policy: how many attempts a job gets and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: the delay before attempt n+1 is drawn
    uniformly from [0, min(max_delay_s, base_delay_s * factor ** (n - 1))]."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 300.0

    def should_retry(self, attempt: int, *, retryable: bool) -> bool:
        return retryable and attempt < self.max_attempts

    def delay_s(self, attempt: int, rand: random.Random | None = None) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * self.factor ** max(attempt - 1, 0))
        return (rand or random).uniform(0, ceiling)
