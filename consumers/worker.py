"""The worker: consumes deliveries with manual acks and runs their handlers.

For each message: decode it, record the attempt's start (a duplicate or stale
delivery loses that race harmlessly and is dropped), run the handler, record the
outcome, and only then ack. What cannot be run goes to the DLQ with a reason. While
the ledger is unreachable the worker holds its messages and retries the write: a
requeue would count toward the queue's delivery limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from eventsourcing.persistence import InterfaceError, OperationalError
from pydantic import BaseModel

from consumers.context import JobCancelled, JobContext, PermanentError
from consumers.delivery import Delivery, UndecodableDelivery
from consumers.progress import ProgressReporter
from consumers.registry import JobRegistry, JobType
from domain.errors import InvalidParams, InvalidTransition, JobNotFound, UnknownJobType
from domain.job import Job
from domain.ledger import Committed, JobLedger
from domain.origin import Origin
from domain.retry import RetryPolicy

log = logging.getLogger("jobledger.worker")
T = TypeVar("T")

STORE_ERRORS = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: a result, an error, or a cancel."""

    result: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = True
    cancelled: bool = False


class Worker:
    def __init__(
        self,
        *,
        ledger: JobLedger,
        registry: JobRegistry,
        channel: AbstractChannel,
        queue_name: str,
        dead_exchange: AbstractExchange,
        worker_id: str,
        retry_policy: RetryPolicy,
        concurrency: int = 4,
        progress_interval_s: float = 0.1,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.channel = channel
        self.queue_name = queue_name
        self.dead_exchange = dead_exchange
        self.worker_id = worker_id
        self.retry_policy = retry_policy
        self.slots = asyncio.Semaphore(concurrency)
        self.threads = ThreadPoolExecutor(concurrency, thread_name_prefix="jobledger-handler")
        self.progress_interval_s = progress_interval_s
        self.in_flight: set[asyncio.Task[None]] = set()
        self.origin = Origin(actor=worker_id)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then let in-flight jobs finish."""
        queue = await self.channel.get_queue(self.queue_name, ensure=True)
        tag = await queue.consume(self._on_message)
        log.info("worker %s consuming %s", self.worker_id, self.queue_name)
        try:
            await stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            if self.in_flight:
                await asyncio.wait(self.in_flight)
            self.threads.shutdown(wait=False, cancel_futures=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            async with self.slots:
                await self.handle(message)
        finally:
            self.in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            delivery = Delivery.decode(message.body, dict(message.headers or {}))
        except UndecodableDelivery as exc:
            await self._dead_letter(message, f"undecodable: {exc}")
            return
        origin = Origin(self.worker_id, delivery.correlation_id, delivery.traceparent)
        try:
            started = await self._store(
                self.ledger.start_job, delivery.job_id, delivery.attempt, self.worker_id, origin
            )
        except JobNotFound:
            await self._dead_letter(message, "unknown job", delivery)
            return
        except InvalidTransition as exc:
            log.info("dropping delivery %s: %s", delivery.message_id, exc)
            await message.ack()
            return
        await self._run(message, delivery, started.job, origin)

    async def _run(
        self, message: AbstractIncomingMessage, delivery: Delivery, job: Job, origin: Origin
    ) -> None:
        try:
            job_type = self.registry.get(job.job_type)
            params = job_type.validate(job.params)
        except (UnknownJobType, InvalidParams) as exc:
            await self._record(job, Outcome(error=str(exc), retryable=False), origin)
            await self._dead_letter(message, str(exc), delivery)
            return
        reporter = ProgressReporter(
            write=lambda pct, msg: self._store(
                self.ledger.report_progress, job.id, pct, msg, origin, attempt=job.attempt
            ),
            interval_s=self.progress_interval_s,
        )
        ctx = JobContext(
            job_id=job.id,
            job_type=job.job_type,
            attempt=job.attempt,
            tenant=job.tenant,
            case_id=job.case_id,
            correlation_id=job.correlation_id,
            logger=log.getChild(job.job_type),
            report=reporter.report_threadsafe(asyncio.get_running_loop()),
        )
        reporter.on_written = lambda committed: _watch_cancel(committed, ctx)
        outcome = await self._invoke(job_type, ctx, params, reporter)
        await reporter.close()
        await self._record(job, outcome, origin)
        await message.ack()

    async def _invoke(
        self, job_type: JobType, ctx: JobContext, params: BaseModel, reporter: ProgressReporter
    ) -> Outcome:
        """Run the handler to its end and say how it ended."""
        started = time.monotonic()
        try:
            if job_type.is_async:
                task = asyncio.ensure_future(job_type.handler(ctx, params))
                reporter.on_cancel = task.cancel
                result = await task
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self.threads, job_type.handler, ctx, params)
            payload = _result_dict(result)
        except (JobCancelled, asyncio.CancelledError):
            if not ctx.cancelled:
                raise
            return Outcome(cancelled=True)
        except Exception as exc:  # noqa: BLE001 - any handler error is the job's failure
            return Outcome(
                error=f"{type(exc).__name__}: {exc}"[:2000],
                retryable=not isinstance(exc, PermanentError),
            )
        log.info(
            "job %s attempt %s ran in %.3fs", ctx.job_id, ctx.attempt, time.monotonic() - started
        )
        return Outcome(result=payload)

    async def _record(self, job: Job, outcome: Outcome, origin: Origin) -> None:
        """Record how the attempt ended. If the job moved on meanwhile (the attempt
        was given up on), the state machine refuses and that is logged."""
        command: Callable[[], Committed]
        if outcome.cancelled:
            command = partial(self.ledger.confirm_cancelled, job.id, origin, attempt=job.attempt)
        elif outcome.error is not None:
            delay = self.retry_policy.delay_s(job.attempt) if outcome.retryable else None
            command = partial(
                self.ledger.fail_attempt,
                job.id,
                outcome.error,
                retryable=outcome.retryable,
                retry_delay_s=delay,
                origin=origin,
                attempt=job.attempt,
            )
        else:
            command = partial(
                self.ledger.complete_job, job.id, outcome.result or {}, origin, attempt=job.attempt
            )
        try:
            await self._store(command)
        except InvalidTransition as exc:
            log.warning("outcome of job %s not recorded: %s", job.id, exc)

    async def _store(self, command: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a ledger command in a thread, retrying while the store is unreachable."""
        backoff = 0.1
        while True:
            try:
                return await asyncio.to_thread(command, *args, **kwargs)
            except STORE_ERRORS as exc:
                log.warning("ledger unreachable, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: str, delivery: Delivery | None = None
    ) -> None:
        """Publish a copy with the reason to the dead-letter exchange, then ack."""
        headers: dict[str, Any] = dict(message.headers or {})
        if delivery is not None:
            headers.update(delivery.headers())
        headers["x-reason"] = reason[:1000]
        headers["x-worker-id"] = self.worker_id
        dead = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.dead_exchange.publish(dead, routing_key=self.queue_name)
        await message.ack()
        log.warning("dead-lettered %s: %s", message.message_id, reason)


def _watch_cancel(committed: Committed, ctx: JobContext) -> bool:
    """After each progress write: has someone asked for this job to stop?"""
    if committed.job.cancel_requested and not ctx.cancelled:
        ctx.cancel()
        return True
    return False


def _result_dict(result: Any) -> dict[str, Any]:
    """The handler's return value as a JSON object for the ledger."""
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    payload = result if isinstance(result, dict) else {"value": result}
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"the handler's result is not JSON: {exc}") from None
    return payload
