"""AMQP names and routing keys: where a delivery goes, and after how long.
The topology itself is declared by infra/topology.py."""

from __future__ import annotations

from dataclasses import dataclass

DELAY_LEVELS = 16
MAX_DELAY_S = 2**DELAY_LEVELS - 1


@dataclass(frozen=True)
class Names:
    prefix: str = "jobledger"

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
        return self.delay(DELAY_LEVELS - 1)


def routing_key(pool: str, delay_s: int = 0) -> str:
    """The key that carries a delivery to ``pool`` after ``delay_s`` seconds."""
    if not 0 <= delay_s <= MAX_DELAY_S:
        msg = f"delay of {delay_s}s is outside 0..{MAX_DELAY_S}s"
        raise ValueError(msg)
    bits = format(delay_s, f"0{DELAY_LEVELS}b")
    return ".".join([*bits, pool])
