"""One attempt of a handler, on the loop, in a thread or in a process, under its time
limits, stoppable by a cancel or a shutdown; it ends in an Outcome."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from uuid import UUID

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from application.attempts import Run
from application.outcomes import JobCancelled, Outcome, PermanentError, classify
from consumers import telemetry as metrics
from consumers.context import JobContext
from consumers.process_run import (
    ChildJob,
    ChildProcess,
    NotStarted,
    ProcessStarter,
    describe_exit,
)
from consumers.progress import ProgressReporter
from consumers.registry import JobType

StopReason = Literal["cancel", "interrupt", "time limit", "hard time limit"]
# How long a stopped thread handler may take to notice before the attempt is given up.
THREAD_GRACE_S = 5.0
# How long a terminated process may take to exit before it is killed.
PROCESS_GRACE_S = 1.0


log = logging.getLogger("jobledger.worker")


async def execute(
    run: Run,
    report: Callable[[int, str], Awaitable[bool]],
    *,
    threads: ThreadPoolExecutor,
    processes: ProcessStarter,
    running: dict[UUID, Execution],
    progress_interval_s: float,
    log_tracebacks: bool = True,
) -> Outcome:
    """Run the attempt's handler in a span of its own, listed in ``running`` meanwhile;
    its progress goes to ``report``, coalesced, and a cancel that answers it stops it."""
    job, kind = run.job, run.kind
    assert isinstance(kind, JobType)
    reporter = ProgressReporter(report, interval_s=progress_interval_s)
    report_any_thread = reporter.report_threadsafe(asyncio.get_running_loop())
    context = JobContext(
        job_id=job.id,
        job_type=job.job_type,
        attempt=job.attempt,
        tenant=job.tenant,
        case_id=job.case_id,
        correlation_id=job.correlation_id,
        logger=log.getChild(job.job_type),
        report=report_any_thread,
    )
    execution = Execution(kind, context, run.params, threads, processes, report_any_thread)
    reporter.on_cancel = lambda: execution.stop("cancel")
    running[job.id] = execution
    began = time.monotonic()
    try:
        with metrics.tracer.start_as_current_span(
            f"run {job.job_type}", attributes=metrics.run_attributes(job, kind.run_in)
        ) as span:
            outcome = await execution.run()
            span.set_attribute("jobledger.outcome", outcome.name)
            if outcome.error is not None:
                span.set_status(StatusCode.ERROR)
    finally:
        del running[job.id]
        await reporter.close()
    labels = {"job_type": job.job_type, "outcome": outcome.name}
    metrics.duration.record(time.monotonic() - began, labels)
    if outcome.traceback and log_tracebacks:
        log.error(
            "%s attempt %d: %s (%s)\n%s",
            job.job_type,
            job.attempt,
            outcome.name,
            outcome.error,
            outcome.traceback.rstrip(),
        )
    else:
        log.info("%s attempt %d: %s", job.job_type, job.attempt, outcome.name)
    return outcome


class Execution:
    def __init__(
        self,
        job_type: JobType,
        ctx: JobContext,
        params: BaseModel,
        threads: ThreadPoolExecutor,
        processes: ProcessStarter,
        report: Callable[[int, str], None],
    ) -> None:
        self.job_type = job_type
        self.ctx = ctx
        self.params = params
        self.threads = threads
        self.processes = processes
        self.report = report
        self.stop_reason: StopReason | None = None
        self._stop: Callable[[], None] = ctx.cancel
        self._stopped = asyncio.Event()

    def stop(self, reason: StopReason) -> None:
        """Ask the handler to stop: cancel its task, set its flag or terminate its process."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.ctx.cancel()
            self._stop()
            self._stopped.set()

    async def run(self) -> Outcome:
        limit = self.job_type.limits.time_limit_s
        timer = (
            asyncio.get_running_loop().call_later(limit, self.stop, "time limit") if limit else None
        )
        try:
            match self.job_type.run_in:
                case "loop":
                    return await self._on_loop()
                case "thread":
                    return await self._in_thread()
                case "process":
                    return await self._in_process()
        finally:
            if timer:
                timer.cancel()

    async def _on_loop(self) -> Outcome:
        task = asyncio.ensure_future(self.job_type.handler(self.ctx, self.params))
        self._stop = lambda: _cancel(task)
        try:
            return self._ended(result=await task)
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise
            return self._ended(exc=JobCancelled())
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the outcome
            return self._ended(exc=exc)

    async def _in_thread(self) -> Outcome:
        loop = asyncio.get_running_loop()
        # The thread runs in a copy of this task's context: the handler's logs and
        # spans belong to its job.
        context = contextvars.copy_context()
        future = loop.run_in_executor(
            self.threads, context.run, self.job_type.handler, self.ctx, self.params
        )
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait({future, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not future.done():  # stopped: give the handler a moment to see its flag
            await asyncio.wait({future}, timeout=THREAD_GRACE_S)
        stopped.cancel()
        if not future.done():
            return self._ended(exc=JobCancelled())  # the thread is abandoned
        try:
            return self._ended(result=future.result())
        except Exception as exc:  # noqa: BLE001
            return self._ended(exc=exc)

    async def _in_process(self) -> Outcome:
        kind, limits, ctx = self.job_type, self.job_type.limits, self.ctx
        job = ChildJob(
            module=kind.handler.__module__,
            qualname=kind.handler.__qualname__,
            params=self.params.model_dump(mode="json"),
            job_id=ctx.job_id,
            job_type=ctx.job_type,
            attempt=ctx.attempt,
            tenant=ctx.tenant,
            case_id=ctx.case_id,
            correlation_id=ctx.correlation_id,
            memory_limit_mb=limits.memory_limit_mb,
            retry_on=kind.retry_on,
        )
        try:
            child = await self.processes.start(job)
        except NotStarted as exc:
            return self._ended(
                outcome=Outcome(error=f"the job's process could not start: {exc}", retryable=True)
            )
        loop = asyncio.get_running_loop()
        self._stop = lambda: _terminate_then_kill(loop, child)
        if self.stop_reason is not None:  # stopped while it was starting
            self._stop()
        killer = (
            loop.call_later(limits.hard_time_limit_s, self._hard_stop, child)
            if limits.hard_time_limit_s
            else None
        )
        try:
            return await self._read(child)
        finally:
            if killer:
                killer.cancel()
            child.kill()
            await child.close()

    def _hard_stop(self, child: ChildProcess) -> None:
        self.stop_reason = "hard time limit"
        child.kill()

    async def _read(self, child: ChildProcess) -> Outcome:
        while True:
            message = await child.messages.get()
            match message:
                case ("started", pid, address_space):
                    _started(self.ctx, pid, address_space)
                case ("progress", percent, text):
                    self.report(percent, text)
                case ("result", result):
                    return self._ended(result=result)
                case ("cancelled",):
                    return self._ended(exc=JobCancelled())
                case ("outcome", outcome):
                    return self._ended(outcome=outcome)
                case ("exited",):
                    if self.stop_reason:
                        return self._ended(exc=JobCancelled())
                    code = await child.close()
                    return Outcome(error=describe_exit(code), retryable=True)

    def _ended(
        self,
        *,
        result: Any = None,
        exc: BaseException | None = None,
        outcome: Outcome | None = None,
    ) -> Outcome:
        """The outcome, given what the handler returned or raised (or, in a process,
        how the child classified that) and why it was stopped."""
        if self.stop_reason == "interrupt":
            return Outcome(interrupted=True)
        if self.stop_reason == "time limit":
            seconds = self.job_type.limits.time_limit_s
            return Outcome(error=f"time limit of {seconds}s exceeded", retryable=True)
        if self.stop_reason == "hard time limit":
            seconds = self.job_type.limits.hard_time_limit_s
            return Outcome(error=f"hard time limit of {seconds}s exceeded", retryable=True)
        if outcome is not None:
            return outcome
        if exc is None:
            try:
                return Outcome(result=result_dict(result))
            except PermanentError as error:
                exc = error
        return classify(exc, self.job_type.retry_on, cancel_requested=self.stop_reason == "cancel")


def _started(ctx: JobContext, pid: int, address_space: int) -> None:
    """The child is about to call the handler: say which process it is, and how large."""
    megabytes = round(address_space / 2**20, 1)
    span = trace.get_current_span()
    span.set_attribute("jobledger.process.pid", pid)
    span.set_attribute("jobledger.process.address_space_mb", megabytes)
    log.debug(
        "%s attempt %d runs in process %d (%.1f MB)", ctx.job_type, ctx.attempt, pid, megabytes
    )


def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()


def _terminate_then_kill(loop: asyncio.AbstractEventLoop, child: ChildProcess) -> None:
    child.terminate()
    loop.call_later(PROCESS_GRACE_S, child.kill)


def result_dict(result: Any) -> dict[str, Any]:
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
