"""AMQP names and routing keys: where a delivery goes, and after how long.
The topology itself is declared by infra/topology.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

from application.lanes import LANES, Lane

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

    def work_queue(self, pool: str, lane: Lane = Lane.NORMAL) -> str:
        """The queue of ``pool``'s ``lane``: ``normal`` keeps the pool's original name,
        so what a deployment had queued before lanes is still consumed."""
        if lane is Lane.NORMAL:
            return f"{self.prefix}.work.{pool}"
        return f"{self.prefix}.work.{pool}.{lane}"

    def lane_binding(self, pool: str, lane: Lane) -> str:
        """The binding of a lane's queue: ``#.<pool>`` for ``normal`` (as before lanes),
        the pool and the lane after exactly the delay's bits for any other."""
        if lane is Lane.NORMAL:
            return f"#.{pool}"
        return ".".join(["*"] * self.delay_levels + [pool, lane])

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

    def routing_key(self, pool: str, delay_s: int = 0, lane: Lane = Lane.NORMAL) -> str:
        """The key that carries a delivery to ``pool``'s ``lane`` after ``delay_s``
        seconds: the delay's bits, most significant first, then the pool, then the
        lane unless it is ``normal`` (whose keys are those from before lanes)."""
        if not 0 <= delay_s <= self.max_delay_s:
            msg = f"delay of {delay_s}s is outside 0..{self.max_delay_s}s"
            raise ValueError(msg)
        bits = format(delay_s, f"0{self.delay_levels}b")
        return ".".join([*bits, pool] if lane is Lane.NORMAL else [*bits, pool, lane])

    def clamp_delay(self, delay_s: float) -> int:
        """Whole seconds, rounded up, within what the delay levels can carry."""
        return min(max(math.ceil(delay_s), 0), self.max_delay_s)


def check_pool_name(pool: str) -> str:
    """A pool may not be named after a lane: its queue's binding ``#.<pool>`` would
    take the other pools' deliveries to that lane."""
    if pool in {lane.value for lane in LANES} - {Lane.NORMAL.value} or not pool or "." in pool:
        msg = f"pool name {pool!r} must be non-empty, without dots, and not a lane's name"
        raise ValueError(msg)
    return pool


def pool_names(spec: str) -> list[str]:
    """``a,b`` as the pools it names, in order, once each (none: ``default``)."""
    pools = [check_pool_name(p.strip()) for p in spec.split(",") if p.strip()]
    return list(dict.fromkeys(pools)) or ["default"]
