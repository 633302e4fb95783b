"""The dispatcher's bookkeeping, with the ledger and the broker stood in for: the
position it records never passes a publish the broker has not confirmed, and
whatever stops it stops it with its own error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import Tracking

from consumers import dispatcher as dispatcher_module
from consumers.dispatcher import Dispatcher
from consumers.routing import Names
from domain.job import Job
from domain.origin import Origin


class Broker:
    """An exchange whose confirms the test gives, one publish at a time."""

    def __init__(self, name: str = "work") -> None:
        self.name = name
        self.confirms: list[asyncio.Future[None]] = []
        self.published = asyncio.Event()

    async def publish(self, message: Any, routing_key: str, mandatory: bool = False) -> None:
        confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        self.published.set()
        await confirm


class Positions:
    def __init__(self) -> None:
        self.recorded: list[int] = []

    def max_tracking_id(self, application_name: str) -> int | None:
        return None

    def insert_tracking(self, tracking: Tracking) -> None:
        self.recorded.append(tracking.notification_id)


class Ledger:
    """Yields the given batches, then raises ``then`` (or waits for ever)."""

    def __init__(self, batches: Sequence[Sequence[tuple[Any, int]]], then: Exception | None):
        self.batches, self.then = batches, then
        self.go_on = asyncio.Event()

    async def batches_after(self, after: int | None) -> AsyncIterator[Sequence[tuple[Any, int]]]:
        for batch in self.batches:
            yield batch
        await self.go_on.wait()
        if self.then is not None:
            raise self.then
        await asyncio.Event().wait()


def submitted(position: int) -> tuple[Any, int]:
    job = Job.submit(
        job_id=uuid4(),
        tenant="t",
        case_id="c",
        job_type="echo",
        params={},
        pool="default",
        max_attempts=1,
        origin=Origin("test"),
    )
    return job.collect_events()[0], position


def dispatcher(ledger: Ledger, broker: Broker, positions: Positions) -> Dispatcher:
    """A dispatcher that records every confirmed batch."""
    return dispatching(ledger.batches_after, broker, positions, record_interval_s=0)


def dispatching(
    batches: Callable[[int | None], AsyncIterator[Sequence[tuple[Any, int]]]],
    broker: Broker,
    positions: Positions,
    **options: Any,
) -> Dispatcher:
    source: Any = type("Source", (), {"batches": staticmethod(batches)})()
    exchange: Any = broker
    return Dispatcher(
        source=source,
        positions=positions,
        application_name="JobLedger",
        names=Names(prefix="t"),
        work_exchange=exchange,
        delay_exchange=exchange,
        control_exchange=exchange,
        **options,
    )


async def until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never happened")


async def test_a_failing_ledger_stops_it_with_that_error_and_keeps_only_confirmed_positions() -> (
    None
):
    ledger = Ledger([[submitted(1)], [submitted(2)]], then=RuntimeError("ledger gone"))
    broker, positions = Broker(), Positions()
    running = asyncio.create_task(dispatcher(ledger, broker, positions).run())
    await until(lambda: len(broker.confirms) == 2)
    broker.confirms[0].set_result(None)  # position 1 confirmed; 2 still waits
    await until(lambda: positions.recorded == [1])

    ledger.go_on.set()
    with pytest.raises(RuntimeError, match="ledger gone"):
        await running

    assert positions.recorded == [1]
    assert broker.confirms[1].cancelled()  # the unconfirmed publish did not outlive it


async def test_a_refused_publish_stops_it_and_nothing_after_it_is_recorded() -> None:
    ledger = Ledger([[submitted(1)], [submitted(2)], [submitted(3)]], then=None)
    broker, positions = Broker(), Positions()
    running = asyncio.create_task(dispatcher(ledger, broker, positions).run())
    await until(lambda: len(broker.confirms) == 3)
    broker.confirms[0].set_result(None)
    broker.confirms[2].set_result(None)  # confirmed, but after a refused one
    broker.confirms[1].set_exception(ConnectionError("returned"))

    with pytest.raises(ConnectionError, match="returned"):
        await running

    assert positions.recorded[-1:] == [1]


async def test_stopping_records_what_the_broker_confirmed() -> None:
    ledger = Ledger([[submitted(1)], [submitted(2)]], then=None)
    broker, positions = Broker(), Positions()
    running = asyncio.create_task(dispatcher(ledger, broker, positions).run())
    await until(lambda: len(broker.confirms) == 2)
    broker.confirms[0].set_result(None)
    broker.confirms[1].set_result(None)
    await asyncio.sleep(0)
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running

    assert positions.recorded[-1] == 2


class UnreachablePositions(Positions):
    """A ledger whose PostgreSQL is gone: a record waits (as its pool would, for a
    connection) until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def insert_tracking(self, tracking: Tracking) -> None:
        self.released.wait()


async def test_a_stop_while_the_ledger_is_unreachable_gives_up_recording(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It waited for the record for as long as the pool did (30 s and more): a stop
    with PostgreSQL down hung. What it gives up on is published again next start."""
    monkeypatch.setattr(dispatcher_module, "FINAL_RECORD_S", 0.2)
    ledger = Ledger([[submitted(1)], [submitted(2)]], then=None)
    broker, positions = Broker(), UnreachablePositions()
    running = asyncio.create_task(dispatcher(ledger, broker, positions).run())
    await until(lambda: len(broker.confirms) == 2)
    broker.confirms[0].set_result(None)
    await asyncio.sleep(0.05)  # recording position 1: waiting on the ledger
    broker.confirms[1].set_result(None)  # position 2 for the stop to record
    await asyncio.sleep(0)
    running.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await running
    finally:
        positions.released.set()


async def test_it_tells_of_each_batch_that_sends_a_job_and_of_no_other() -> None:
    """The queue-depth sampler samples again soon after jobs are sent (infra/gauges.py).
    A batch of events passed over (a job's start and end, yielded as None) sends
    nothing."""
    ledger = Ledger([[submitted(1), submitted(2)], [(None, 3)], [submitted(4)]], then=None)
    broker, positions = Broker(), Positions()
    told: list[int] = []
    sending = dispatcher(ledger, broker, positions)
    sending.on_sent = lambda: told.append(sending.published)
    running = asyncio.create_task(sending.run())
    await until(lambda: len(broker.confirms) == 3)
    for confirm in broker.confirms:
        confirm.set_result(None)
    await until(lambda: positions.recorded[-1:] == [4])
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert told == [2, 3]


class ConfirmingBroker(Broker):
    """An exchange that confirms each publish at once."""

    async def publish(self, message: Any, routing_key: str, mandatory: bool = False) -> None:
        self.confirms.append(asyncio.get_running_loop().create_future())
        self.confirms[-1].set_result(None)


async def test_a_trickle_of_jobs_is_recorded_once_a_record_interval_not_once_a_job() -> None:
    """Each record is a commit: at 30 jobs a second, recorded every 50 ms, the
    dispatcher's position was nearly one more commit a job. Stopping still records
    the last confirmed position."""
    trickle = 10

    async def batches(after: int | None) -> AsyncIterator[Sequence[tuple[Any, int]]]:
        for position in range(1, trickle + 1):
            yield [submitted(position)]
            await asyncio.sleep(0.02)
        await asyncio.Event().wait()

    broker, positions = ConfirmingBroker(), Positions()
    sending = dispatching(batches, broker, positions)  # its own record interval
    loop = asyncio.get_running_loop()
    began = loop.time()
    running = asyncio.create_task(sending.run())
    await until(lambda: len(broker.confirms) == trickle)
    await asyncio.sleep(0.05)
    elapsed_s = loop.time() - began

    assert positions.recorded, "the first confirmed position is recorded"
    assert len(positions.recorded) <= 1 + elapsed_s / dispatcher_module.RECORD_INTERVAL_S
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert positions.recorded[-1] == trickle


async def test_a_refused_publish_stops_it_at_once_not_after_the_record_interval() -> None:
    """Recorded every few seconds, a refusal is not left waiting out the interval
    while later batches go on being published."""
    ledger = Ledger([[submitted(1)], [submitted(2)]], then=None)
    broker, positions = Broker(), Positions()
    running = asyncio.create_task(
        dispatching(ledger.batches_after, broker, positions, record_interval_s=30).run()
    )
    await until(lambda: len(broker.confirms) == 2)
    broker.confirms[0].set_result(None)
    await until(lambda: positions.recorded == [1])  # and then waits out its interval
    broker.confirms[1].set_exception(ConnectionError("returned"))

    with pytest.raises(ConnectionError, match="returned"):
        async with asyncio.timeout(5):
            await running
    assert positions.recorded == [1]
