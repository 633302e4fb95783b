"""The AMQP worker: it turns the decisions of the attempt use case
(application/attempts.py) into acks, rejects and publishes, and runs the handlers
it is told to run. It decides nothing about a job itself.

The worker consumes every lane of its pool (application/lanes.py) and holds what the
broker sends in a ``LanePicker``; whenever one of its ``concurrency`` slots is free it
starts the message the picker names: the highest lane first, with a bound on how
often a waiting lower lane is passed over. Each message runs in a task the worker
owns: the AMQP client cancels its consumer callbacks' tasks when their channel
closes (the broker's consumer_timeout, a lost connection), and an attempt must
outlive its channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry.trace import SpanKind

from application.attempts import (
    Ack,
    Attempts,
    DeadLetter,
    Decision,
    Defer,
    Hold,
    Reject,
    Run,
    Wait,
)
from application.delivery import Delivery, UndecodableDelivery
from application.lanes import DEFAULT_STARVATION_BOUND, LANES, Lane, LanePicker
from application.outcomes import Outcome
from consumers import telemetry as metrics
from consumers.execution import Execution, execute
from consumers.messages import Messages
from consumers.process_run import ProcessStarter
from domain.correlation import about

log = logging.getLogger("jobledger.worker")
# How long stopped attempts may take to record how they ended before the worker exits.
RECORD_GRACE_S = 10.0
BROKER_GRACE_S = 3.0  # for a broker call made while stopping


@dataclass(frozen=True)
class WorkerOptions:
    pool: str = "default"
    concurrency: int = 4
    progress_interval_s: float = 0.1
    shutdown_timeout_s: float = 30.0
    heartbeat_interval_s: float = 2.0
    # Holding no job, a worker beats this often (its TTL still covers it); the job it
    # takes next brings its next beat back to ``heartbeat_interval_s`` after the last.
    idle_heartbeat_interval_s: float = 2.0
    log_tracebacks: bool = True
    starvation_bound: int = DEFAULT_STARVATION_BOUND
    # Unacked messages each lane's consumer may hold, the running ones included: at
    # least ``concurrency``, so that one lane alone keeps every slot busy.
    prefetch: int = 8


class Worker:
    def __init__(
        self,
        *,
        attempts: Attempts,
        channel: AbstractChannel,
        messages: Messages,
        options: WorkerOptions,
        processes: ProcessStarter,
    ) -> None:
        self.attempts = attempts
        self.processes = processes
        self.channel = channel
        self.messages = messages
        self.options = options
        self.queue_name = messages.names.work_queue(options.pool)
        self.waiting: LanePicker[AbstractIncomingMessage] = LanePicker(options.starvation_bound)
        self.free_slots = options.concurrency
        self.slot_claims = 0  # copies back from a Wait, before the picker's next start
        self._wake = asyncio.Event()
        self._taken = asyncio.Event()  # a message was taken: the heartbeat's busy again
        self.threads = ThreadPoolExecutor(options.concurrency, thread_name_prefix="jobledger-job")
        self.running: dict[UUID, Execution] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.holding: set[asyncio.Task[None]] = set()  # copies waiting out another's attempt
        self.draining = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then shut down gracefully."""
        labels = {"worker_id": self.attempts.worker_id, "pool": self.options.pool}
        names = self.messages.names
        with metrics.counting_in_flight(self.running, labels):
            queues = [
                (lane, await self.channel.get_queue(names.work_queue(self.options.pool, lane)))
                for lane in LANES
            ]
            await self.attempts.beat()
            heart = asyncio.create_task(self._heartbeat())
            stop_listening = await self.messages.listen_for_cancels(self.channel, self._on_cancel)
            # A per-consumer prefetch (the only kind quorum queues take): each lane's.
            prefetch = max(self.options.prefetch, self.options.concurrency)
            await self.channel.set_qos(prefetch_count=prefetch)
            consuming = [
                (queue, await queue.consume(partial(self._on_message, lane)))
                for lane, queue in queues
            ]
            picking = asyncio.create_task(self._pick())
            log.info(
                "worker %s consuming the lanes of %s", self.attempts.worker_id, self.queue_name
            )
            try:
                await stopping.wait()
            finally:
                # Each waits for its channel, which waits for the broker: bounded, so a
                # worker whose broker is gone still stops (its messages go back anyway).
                for queue, tag in consuming:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(BROKER_GRACE_S):
                            await queue.cancel(tag)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(BROKER_GRACE_S):
                        await stop_listening()
                picking.cancel()
                await self._drain()
                heart.cancel()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(3):
                        await self.attempts.stop()
                self.threads.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        """Give back what was sent ahead and never started (another worker takes it),
        let running jobs finish for up to the shutdown timeout, then interrupt the
        rest: each is recorded as interrupted and runs again on another worker."""
        self.draining = True
        for message in self.waiting.take_all():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(BROKER_GRACE_S):
                    await _quietly(message.nack(requeue=True))
        for task in self.holding:  # their copies go back to the queue with the channel
            task.cancel()
        if not self.tasks:
            return
        log.info(
            "waiting up to %.0fs for %d running jobs",
            self.options.shutdown_timeout_s,
            len(self.running),
        )
        await asyncio.wait(set(self.tasks), timeout=self.options.shutdown_timeout_s)
        for execution in self.running.values():
            execution.stop("interrupt")
        for task in self.holding:
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=RECORD_GRACE_S)
        for task in self.tasks:  # still writing (the ledger is down): their messages go
            task.cancel()  # back with the channel, and the next holder decides them
        if self.tasks:
            await asyncio.wait(set(self.tasks))

    async def _on_message(self, lane: Lane, message: AbstractIncomingMessage) -> None:
        if self.draining:  # sent while stopping, never started: another worker takes it
            await _quietly(message.nack(requeue=True))
            return
        self.waiting.add(lane, message)
        self._wake.set()

    async def _pick(self) -> None:
        """Whenever a slot is free and a message waits, start the one the picker names."""
        while True:
            while not (self.free_slots > self.slot_claims and len(self.waiting) > 0):
                self._wake.clear()
                await self._wake.wait()
            lane, message = self.waiting.pick()
            self.free_slots -= 1
            task = asyncio.create_task(self._handle(message, lane, _Slot(self)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self._taken.set()

    def _slot_freed(self) -> None:
        self.free_slots += 1
        self._wake.set()

    async def _handle(self, message: AbstractIncomingMessage, lane: Lane, slot: _Slot) -> None:
        """Decide and settle one message, holding ``slot`` until its attempt ends (or
        until it is known not to start here)."""
        try:
            delivery = Delivery.decode(message.body, dict(message.headers or {}))
        except UndecodableDelivery as exc:
            delivery = None
            undecodable = DeadLetter(f"undecodable: {exc}")
        try:
            if delivery is None:
                slot.release()
                await self._settle(message, undecodable, None, lane)
                return
            queue_name = self.messages.names.work_queue(self.options.pool, lane)
            with (
                about(
                    correlation_id=delivery.correlation_id,
                    job_id=str(delivery.job_id),
                    attempt=delivery.attempt,
                ),
                metrics.messaging_span("consume", SpanKind.CONSUMER, delivery, queue_name),
            ):
                decision = await self._run(message, delivery, slot)
                while isinstance(decision, Wait):  # a moment early: wait, without a slot
                    await asyncio.sleep(decision.wait_s)
                    slot = await self._take_slot()
                    decision = await self._run(message, delivery, slot)
                if decision is None:
                    return
                if isinstance(decision, Hold):
                    decision = await self._wait_out(delivery, decision)
                await self._settle(message, decision, delivery, lane)
        except asyncio.CancelledError:
            return  # stopping: the message goes back to the queue with the channel
        except Exception:
            # Unsettled, the message returns when the channel closes and is decided
            # again from the ledger; the worker itself keeps running.
            log.exception("message %s not handled", message.message_id)
        finally:
            slot.release()

    async def _run(
        self, message: AbstractIncomingMessage, delivery: Delivery, slot: _Slot
    ) -> Decision | None:
        """Begin, in ``slot``, and run the attempt if it is ours to run; the slot is
        released when this returns. None: stopping, the message went back to the queue."""
        try:
            if self.draining:  # sent ahead, never started: another worker takes it
                await _quietly(message.nack(requeue=True))
                return None
            decision = await self.attempts.begin(
                delivery,
                redrive=Messages.is_redrive(message, self.messages.names),
                traceparent=metrics.current_traceparent(delivery.traceparent),
            )
            if isinstance(decision, Run):
                metrics.observe_queue_wait(message, delivery.job_type)
                decision = await self.attempts.finish(decision, await self._execute(decision))
            return decision
        finally:
            slot.release()

    async def _take_slot(self) -> _Slot:
        """A slot for a copy that waited out its ``run_at`` (``Wait``): it is taken
        ahead of the messages the picker holds, as the copy was picked already."""
        self.slot_claims += 1
        try:
            while self.free_slots <= 0:
                self._wake.clear()
                await self._wake.wait()
        finally:
            self.slot_claims -= 1
        self.free_slots -= 1
        if self.free_slots > 0:
            self._wake.set()  # the picker may start another
        return _Slot(self)

    async def _wait_out(self, delivery: Delivery, hold: Hold) -> Decision:
        task = asyncio.current_task()
        assert task is not None
        if self.draining:
            raise asyncio.CancelledError  # the copy goes back to the queue with the channel
        self.holding.add(task)
        try:
            return await self.attempts.wait_out(delivery, hold)
        finally:
            self.holding.discard(task)

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        decision: Decision,
        delivery: Delivery | None,
        lane: Lane = Lane.NORMAL,
    ) -> None:
        """Do what the decision says with the message. If its channel is gone, the
        broker gives the message to another consumer, which decides it again."""
        match decision:
            case Ack(job=job):
                if job is not None:
                    metrics.count_outcome(job)
                await _quietly(message.ack())
            case Reject(job=job):
                if job is not None:
                    metrics.count_outcome(job)
                metrics.dead_lettered.add(
                    1, {"job_type": delivery.job_type if delivery else "unknown"}
                )
                await _quietly(message.reject(requeue=False))
            case DeadLetter(reason):
                metrics.dead_lettered.add(
                    1, {"job_type": delivery.job_type if delivery else "unknown"}
                )
                await self.messages.dead_letter(message, reason, self.attempts.worker_id, delivery)
            case Defer(wait_s) if delivery is not None:
                await self.messages.defer(message, delivery, wait_s, lane)

    async def _execute(self, run: Run) -> Outcome:
        return await execute(
            run,
            lambda percent, message: self.attempts.report(run, percent, message),
            threads=self.threads,
            processes=self.processes,
            running=self.running,
            progress_interval_s=self.options.progress_interval_s,
            log_tracebacks=self.options.log_tracebacks,
        )

    async def _on_cancel(self, job_id: UUID) -> None:
        execution = self.running.get(job_id)
        if execution is not None and await self.attempts.cancel_requested(job_id):
            log.info("cancelling running job %s", job_id)
            execution.stop("cancel")

    async def _heartbeat(self) -> None:
        """Say we are alive, and look in the ledger for cancels we may have missed.

        While the worker handles a message, a beat every ``heartbeat_interval_s``.
        Handling none, every ``idle_heartbeat_interval_s``: then there is no attempt
        a beat could vouch for or a cancel could stop, only the worker's own life to
        renew. The first message taken after that brings the next beat back to
        ``heartbeat_interval_s`` after the last (at once, if that is past), so an
        attempt's holder beats as often as ever once it starts."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            if not self.tasks:
                self._taken.clear()
                idle_until = last + self.options.idle_heartbeat_interval_s
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(idle_until):
                        await self._taken.wait()
            await asyncio.sleep(max(0.0, last + self.options.heartbeat_interval_s - loop.time()))
            last = loop.time()
            try:
                for job_id in await self.attempts.beat():
                    if (execution := self.running.get(job_id)) is not None:
                        execution.stop("cancel")
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("heartbeat failed: %s", exc)


class _Slot:
    """One of the worker's ``concurrency`` slots, taken by the picker for a message;
    released once, whichever way the message ends."""

    def __init__(self, worker: Worker) -> None:
        self.worker: Worker | None = worker

    def release(self) -> None:
        if self.worker is not None:
            self.worker._slot_freed()
            self.worker = None


async def _quietly(settling: object) -> None:
    try:
        await settling  # type: ignore[misc]
    except (aio_pika.exceptions.AMQPError, RuntimeError) as exc:
        log.warning("could not settle a message: %r", exc)
