"""Metrics observed from the stores rather than counted in code: the depth of the
work queues and the DLQ (sampled by the dispatcher) and the projector's lag."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger("jobledger.metrics")
meter = metrics.get_meter("jobledger.infra")
# The longest wait between two samples of queues found empty, with nothing sent.
QUIET_MAX_S = 30.0


class QueueDepths:
    """The last sampled message count of each queue, as observable gauges; and a
    warning for a work queue that holds jobs with no consumer for ``unserved_after_s``
    (a pool no worker serves: its jobs would wait for good, unseen)."""

    def __init__(self, dead_queue: str, unserved_after_s: float = 60.0) -> None:
        self.dead_queue = dead_queue
        self.unserved_after_s = unserved_after_s
        self.depths: dict[str, int] = {}
        self.unserved_since: dict[str, float] = {}  # queue: when it was first seen so
        self.warned: set[str] = set()
        self.pools: dict[str, str] = {}  # each work queue's pool
        self.samples = 0  # taken so far
        self._sent = asyncio.Event()
        meter.create_observable_gauge(
            "jobledger.queue.depth",
            [self._work],
            unit="{message}",
            description="Ready messages in each work queue",
        )
        meter.create_observable_gauge(
            "jobledger.dlq.depth",
            [self._dead],
            unit="{message}",
            description="Messages in the dead-letter queue",
        )

    def _work(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {"queue": q}) for q, n in self.depths.items() if q != self.dead_queue
        ]

    def _dead(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.dead_queue in self.depths:
            return [Observation(self.depths[self.dead_queue], {"queue": self.dead_queue})]
        return []

    async def watch(
        self,
        connection: AbstractRobustConnection,
        queues: Mapping[str, str],
        interval_s: float,
        quiet_max_s: float = QUIET_MAX_S,
    ) -> None:
        """Sample every ``interval_s`` until cancelled (a passive declare per queue, on
        one channel kept open: opening and closing one a sample was two more round
        trips and a channel process the broker starts and stops); ``queues`` maps each
        work queue (every lane of a pool) to its pool.

        A quiet sample (every work queue empty, the DLQ as it was, nothing ``sent``
        meanwhile) doubles the wait before the next, up to ``quiet_max_s``: an idle
        stack's sampling was most of its dispatcher's wake-ups. The first ``sent``
        after that brings the next sample back to ``interval_s`` after the last (at
        once, if that is past). A work queue that holds anything is sampled every
        ``interval_s``, so the unserved pool warning is as timely as ever."""
        self.pools.update(queues)
        names = [*queues, self.dead_queue]
        channel: AbstractRobustChannel | None = None
        loop = asyncio.get_running_loop()
        wait_s = interval_s
        while True:
            sampled_at = loop.time()
            self._sent.clear()
            before = dict(self.depths)
            try:
                if channel is None:  # robust: it reopens itself, after a 404 too
                    channel = await connection.channel()
                for name in names:
                    # Not remembered for the channel's reopening (robust=False): a missing
                    # queue's passive declare, redone, would close it again.
                    queue = await channel.declare_queue(name, passive=True, robust=False)
                    self.depths[name] = queue.declaration_result.message_count or 0
                    if name != self.dead_queue:
                        self._served(name, queue.declaration_result.consumer_count or 0)
                self.samples += 1
                quiet = (
                    not self._sent.is_set()
                    and self.depths == before
                    and not any(self.depths[name] for name in queues)
                )
            except Exception as exc:  # noqa: BLE001 - a sample is skipped, not fatal
                log.debug("queue depth sample failed: %r", exc)
                quiet = False
            wait_s = min(2 * wait_s, max(quiet_max_s, interval_s)) if quiet else interval_s
            if wait_s > interval_s:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(sampled_at + wait_s):
                        await self._sent.wait()
                if self._sent.is_set():
                    wait_s = interval_s
            await asyncio.sleep(max(0.0, sampled_at + interval_s - loop.time()))

    def sent(self) -> None:
        """Messages were published to the work queues (or towards them)."""
        self._sent.set()

    def _served(self, queue: str, consumers: int) -> None:
        if consumers or not self.depths[queue]:
            self.unserved_since.pop(queue, None)
            self.warned.discard(queue)
            return
        since = self.unserved_since.setdefault(queue, time.monotonic())
        waited = time.monotonic() - since
        if waited >= self.unserved_after_s and queue not in self.warned:
            self.warned.add(queue)
            pool = self.pools.get(queue, queue.rsplit(".", 1)[-1])
            log.warning(
                "queue %s holds %d jobs and has had no consumer for %.0f s: no worker "
                "serves pool %r (start one with `jobledger worker --pool %s`)",
                queue,
                self.depths[queue],
                waited,
                pool,
                pool,
            )


def observe_projector_lag(lag: Callable[[], int | None]) -> None:
    """Ledger positions the job view has yet to apply."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        with contextlib.suppress(Exception):
            value = lag()
            if value is not None:
                return [Observation(value)]
        return []

    meter.create_observable_gauge(
        "jobledger.projector.lag",
        [observe],
        unit="{event}",
        description="Ledger positions not yet applied to the job view",
    )


def observe_unprojectable(count: Callable[[], int]) -> None:
    """Events the job view set aside as unprojectable (job_view_unprojectable)."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count())]

    meter.create_observable_gauge(
        "jobledger.projector.unprojectable",
        [observe],
        unit="{event}",
        description="Ledger events the job view could not take, set aside with their position",
    )
