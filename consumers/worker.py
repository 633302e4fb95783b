"""The worker: consumes deliveries with manual acks and runs their handlers.

For each message: decode it, record the attempt's start (a duplicate or stale
delivery loses that race harmlessly), run the handler, record the outcome, and only
then ack; a job that ends ``failed`` is rejected into the DLQ through the queue's own
dead-letter exchange. What cannot be run is dead-lettered with a reason. While the
ledger is unreachable the worker holds its messages and retries the write: a
requeue would count toward the queue's delivery limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry.trace import SpanKind, StatusCode

from consumers import telemetry as metrics
from consumers.context import JobContext
from consumers.delivery import Delivery, UndecodableDelivery
from consumers.execution import Execution, Outcome
from consumers.messages import Messages
from consumers.progress import ProgressReporter
from consumers.recovery import Recovery
from consumers.registry import JobRegistry, JobType, Limits
from consumers.store import Store
from consumers.telemetry import current_traceparent, messaging_span
from consumers.telemetry import tracer as job_tracer
from domain.correlation import about
from domain.errors import InvalidParams, InvalidTransition, JobNotFound, UnknownJobType
from domain.job import Job, Status
from domain.ledger import Committed, JobLedger
from domain.origin import Origin
from domain.retry import RetryPolicy

log = logging.getLogger("jobledger.worker")


class Liveness(Protocol):
    """Where workers say they are alive and which jobs they hold."""

    def beat(self, worker_id: str, pool: str, in_flight: list[str]) -> None: ...

    def forget(self, worker_id: str) -> None: ...

    def holds(self, worker_id: str, job_id: UUID) -> bool: ...


class Limiter(Protocol):
    """Rate and concurrency limits shared by every worker of a pool."""

    def acquire(self, job_type: str, job_id: UUID, worker_id: str, limits: Limits) -> float: ...

    def release(self, job_id: UUID) -> None: ...


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    pool: str = "default"
    concurrency: int = 4
    progress_interval_s: float = 0.1
    shutdown_timeout_s: float = 30.0
    heartbeat_interval_s: float = 2.0


class Worker:
    def __init__(
        self,
        *,
        ledger: JobLedger,
        registry: JobRegistry,
        channel: AbstractChannel,
        messages: Messages,
        liveness: Liveness,
        limiter: Limiter,
        retry_policy: RetryPolicy,
        options: WorkerOptions,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.channel = channel
        self.messages = messages
        self.liveness = liveness
        self.limiter = limiter
        self.retry_policy = retry_policy
        self.options = options
        self.store = Store()
        self.slots = asyncio.Semaphore(options.concurrency)
        self.threads = ThreadPoolExecutor(options.concurrency, thread_name_prefix="jobledger-job")
        self.running: dict[UUID, Execution] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.draining = False
        self.recovery = Recovery(ledger, liveness, self.store)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then shut down gracefully."""
        worker = {"worker_id": self.options.worker_id, "pool": self.options.pool}
        with metrics.counting_in_flight(self.running, worker):
            await self._consume(stopping)

    async def _consume(self, stopping: asyncio.Event) -> None:
        queue = await self.channel.get_queue(self.messages.names.work_queue(self.options.pool))
        await self.store.call(self._beat)
        heart = asyncio.create_task(self._heartbeat())
        cancel_tag = await self.messages.listen_for_cancels(self.channel, self._on_cancel)
        tag = await queue.consume(self._on_message)
        log.info("worker %s consuming %s", self.options.worker_id, queue.name)
        try:
            await stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
                await cancel_tag()
            await self._drain()
            heart.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.liveness.forget, self.options.worker_id)
            self.threads.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        """Let running jobs finish for up to the shutdown timeout, then interrupt the
        rest: each is recorded as interrupted and runs again on another worker."""
        self.draining = True
        if not self.in_flight:
            return
        log.info(
            "waiting up to %.0fs for %d running jobs",
            self.options.shutdown_timeout_s,
            len(self.in_flight),
        )
        await asyncio.wait(set(self.in_flight), timeout=self.options.shutdown_timeout_s)
        for execution in self.running.values():
            execution.stop("interrupt")
        if self.in_flight:
            await asyncio.wait(set(self.in_flight))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # The job runs in a task of our own: the AMQP client cancels the tasks of its
        # consumer callbacks when their channel closes (the broker's consumer_timeout,
        # a lost connection), and an attempt must outlive its channel.
        task = asyncio.create_task(self._process(message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        async with self.slots:
            if self.draining:  # prefetched, never started: another worker takes it
                with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError):
                    await message.nack(requeue=True)
                return
            try:
                await self.handle(message)
            except Exception:
                # Unsettled, the message returns when the channel closes, and its
                # attempt is then recovered; the worker itself keeps running.
                log.exception("message %s not handled", message.message_id)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            delivery = Delivery.decode(message.body, dict(message.headers or {}))
        except UndecodableDelivery as exc:
            await self.messages.dead_letter(message, f"undecodable: {exc}", self.options.worker_id)
            metrics.dead_lettered.add(1, {"job_type": "unknown"})
            return
        queue = self.messages.names.work_queue(self.options.pool)
        with (
            about(
                correlation_id=delivery.correlation_id,
                job_id=str(delivery.job_id),
                attempt=delivery.attempt,
            ),
            messaging_span("consume", SpanKind.CONSUMER, delivery, queue),
        ):
            traceparent = current_traceparent(delivery.traceparent)
            origin = Origin(self.options.worker_id, delivery.correlation_id, traceparent)
            try:
                started = await self._start(message, delivery, origin)
            except JobNotFound:
                await self._dead_letter(message, "unknown job", delivery)
                return
            if started is not None:
                metrics.observe_queue_wait(message, delivery.job_type)
                await self._run(message, delivery, started.job, origin)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: str, delivery: Delivery
    ) -> None:
        await self.messages.dead_letter(message, reason, self.options.worker_id, delivery)
        metrics.dead_lettered.add(1, {"job_type": delivery.job_type})

    async def _start(
        self, message: AbstractIncomingMessage, delivery: Delivery, origin: Origin
    ) -> Committed | None:
        """Record the attempt's start, or deal with a delivery that cannot start."""
        kind = _kind_or_none(self.registry, delivery.job_type)
        if kind is not None and (kind.limits.per_second or kind.limits.max_running):
            wait_s = await self.store.call(
                self.limiter.acquire,
                kind.name,
                delivery.job_id,
                self.options.worker_id,
                kind.limits,
            )
            if wait_s > 0:
                await self.messages.defer(message, delivery, wait_s)
                return None
        try:
            return await self.store.call(
                self.ledger.start_job,
                delivery.job_id,
                delivery.attempt,
                self.options.worker_id,
                origin,
            )
        except InvalidTransition:
            if kind is not None and kind.limits.max_running:
                await self.store.call(self.limiter.release, delivery.job_id)
        job = await self.store.call(self.ledger.read_job, delivery.job_id)
        await self._not_startable(message, delivery, job, origin)
        return None

    async def _not_startable(
        self, message: AbstractIncomingMessage, delivery: Delivery, job: Job, origin: Origin
    ) -> None:
        if Messages.is_redrive(message, self.messages.names) and job.status in (
            Status.FAILED,
            Status.CANCELLED,
        ):
            operator = Origin("operator", origin.correlation_id, origin.traceparent)
            await self.store.record(self.ledger.retry_job, job.id, operator)
            log.info("job %s re-driven from the DLQ by an operator", job.id)
        elif (
            message.redelivered and job.status is Status.RUNNING and job.attempt == delivery.attempt
        ):
            failed = await self.recovery.settle(job, origin, self._retry_delay(job))
            if failed:
                metrics.dead_lettered.add(1, {"job_type": job.job_type})
                await settle(message, reject=True)
                return
        else:
            log.info("dropping stale delivery %s (job is %s)", delivery.message_id, job.status)
        await settle(message)

    async def _run(
        self, message: AbstractIncomingMessage, delivery: Delivery, job: Job, origin: Origin
    ) -> None:
        try:
            kind = self.registry.get(job.job_type)
            params = kind.validate(job.params)
        except (UnknownJobType, InvalidParams) as exc:
            await self._record(job, Outcome(error=str(exc), retryable=False), origin)
            await self._dead_letter(message, str(exc), delivery)
            return
        reporter = ProgressReporter(
            write=lambda pct, msg: self.store.call(
                self.ledger.report_progress, job.id, pct, msg, origin, attempt=job.attempt
            ),
            interval_s=self.options.progress_interval_s,
        )
        report = reporter.report_threadsafe(asyncio.get_running_loop())
        execution = Execution(kind, _context(job, report), params, self.threads, report)
        reporter.on_written = lambda committed: self._check_cancel(committed.job)
        outcome = await self._execute(job, execution)
        await reporter.close()
        failed = await self._record(job, outcome, origin)
        if kind.limits.max_running:
            await self.store.call(self.limiter.release, job.id)
        if failed:
            metrics.dead_lettered.add(1, {"job_type": job.job_type})
        await settle(message, reject=failed)

    async def _execute(self, job: Job, execution: Execution) -> Outcome:
        """Run the handler in a span of its own, among the jobs running."""
        self.running[job.id] = execution
        began = time.monotonic()
        try:
            with job_tracer.start_as_current_span(
                f"run {job.job_type}",
                attributes={
                    "jobledger.job_id": str(job.id),
                    "jobledger.job_type": job.job_type,
                    "jobledger.attempt": job.attempt,
                    "jobledger.run_in": execution.job_type.run_in,
                },
            ) as span:
                outcome = await execution.run()
                span.set_attribute("jobledger.outcome", metrics.outcome_name(outcome))
                if outcome.error is not None:
                    span.set_status(StatusCode.ERROR)
        finally:
            del self.running[job.id]
        metrics.duration.record(
            time.monotonic() - began,
            {"job_type": job.job_type, "outcome": metrics.outcome_name(outcome)},
        )
        return outcome

    async def _record(self, job: Job, outcome: Outcome, origin: Origin) -> bool:
        """Record how the attempt ended; True if the job has now failed for good.
        If the job moved on meanwhile (the attempt was given up on), the state
        machine refuses and that is logged."""
        ledger, attempt = self.ledger, job.attempt
        if outcome.interrupted:
            command: Any = (ledger.interrupt_attempt, job.id, "worker shut down")
            kwargs: dict[str, Any] = {"attempt": attempt, "origin": origin}
        elif outcome.cancelled:
            command, kwargs = (ledger.confirm_cancelled, job.id, origin), {"attempt": attempt}
        elif outcome.error is not None:
            delay = outcome.retry_delay_s if outcome.retry_delay_s is not None else None
            if outcome.retryable and delay is None:
                delay = self._retry_delay(job)
            command = (ledger.fail_attempt, job.id, outcome.error)
            kwargs = {
                "retryable": outcome.retryable,
                "retry_delay_s": delay,
                "origin": origin,
                "attempt": attempt,
            }
        else:
            command, kwargs = (
                (ledger.complete_job, job.id, outcome.result or {}, origin),
                {"attempt": attempt},
            )
        committed = await self.store.record(*command, **kwargs)
        if committed is not None:
            metrics.count_outcome(committed.job)
            log.info("%s attempt %d: %s", job.job_type, attempt, committed.job.status)
        return committed is not None and committed.job.status is Status.FAILED

    def _retry_delay(self, job: Job) -> float:
        kind = _kind_or_none(self.registry, job.job_type)
        policy = kind.retry if kind and kind.retry else self.retry_policy
        return policy.delay_s(job.attempt)

    def _check_cancel(self, job: Job) -> bool:
        """A cancel found in the ledger (after a progress write, or a heartbeat)."""
        execution = self.running.get(job.id)
        if job.cancel_requested and execution is not None:
            execution.stop("cancel")
            return True
        return False

    def _on_cancel(self, job_id: UUID) -> None:
        execution = self.running.get(job_id)
        if execution is not None:
            log.info("cancelling running job %s", job_id)
            execution.stop("cancel")

    def _beat(self) -> None:
        ids = [str(job_id) for job_id in self.running]
        self.liveness.beat(self.options.worker_id, self.options.pool, ids)

    async def _heartbeat(self) -> None:
        """Say we are alive, and look in the ledger for cancels we may have missed."""
        while True:
            await asyncio.sleep(self.options.heartbeat_interval_s)
            try:
                await asyncio.to_thread(self._beat)
                for job_id in list(self.running):
                    self._check_cancel(await asyncio.to_thread(self.ledger.read_job, job_id))
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("heartbeat failed: %s", exc)


async def settle(message: AbstractIncomingMessage, *, reject: bool = False) -> None:
    """Ack (or reject into the DLQ) once the ledger has the outcome. If the channel
    that delivered the message is gone (a lost connection, the broker's
    consumer_timeout), the broker has already given the message to another consumer,
    which finds the attempt recorded and drops it."""
    try:
        await (message.reject(requeue=False) if reject else message.ack())
    except (aio_pika.exceptions.AMQPError, RuntimeError) as exc:
        log.warning("could not settle message %s: %r", message.message_id, exc)


def _kind_or_none(registry: JobRegistry, name: str) -> JobType | None:
    try:
        return registry.get(name)
    except UnknownJobType:
        return None


def _context(job: Job, report: Callable[[int, str], None]) -> JobContext:
    return JobContext(
        job_id=job.id,
        job_type=job.job_type,
        attempt=job.attempt,
        tenant=job.tenant,
        case_id=job.case_id,
        correlation_id=job.correlation_id,
        logger=log.getChild(job.job_type),
        report=report,
    )
