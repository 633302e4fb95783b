"""AMQP names and routing keys: where a delivery goes, and after how long.
The topology itself is declared by infra/topology.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

DELAY_LEVELS = 16


@dataclass(frozen=True)
class Names:
    """Every exchange and queue name, from a prefix; and the delay levels: level k
    waits 2^k s, so ``delay_levels`` levels carry any delay up to 2^levels - 1 s."""

    prefix: str = "jobledger"
    delay_levels: int = DELAY_LEVELS

    @property
    def max_delay_s(self) -> int:
        return int(2**self.delay_levels - 1)

    @property
    def work_exchange(self) -> str:
        return f"{self.prefix}.work"

    def work_queue(self, pool: str) -> str:
        return f"{self.prefix}.work.{pool}"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def control_exchange(self) -> str:
        return f"{self.prefix}.control"

    def delay(self, level: int) -> str:
        return f"{self.prefix}.delay.{level:02d}"

    @property
    def delay_entry(self) -> str:
        return self.delay(self.delay_levels - 1)

    def routing_key(self, pool: str, delay_s: int = 0) -> str:
        """The key that carries a delivery to ``pool`` after ``delay_s`` seconds: the
        delay's bits, most significant first, then the pool."""
        if not 0 <= delay_s <= self.max_delay_s:
            msg = f"delay of {delay_s}s is outside 0..{self.max_delay_s}s"
            raise ValueError(msg)
        bits = format(delay_s, f"0{self.delay_levels}b")
        return ".".join([*bits, pool])

    def clamp_delay(self, delay_s: float) -> int:
        """Whole seconds, rounded up, within what the delay levels can carry."""
        return min(max(math.ceil(delay_s), 0), self.max_delay_s)
