"""Process-run handlers: each attempt runs in a fresh child process, so it can be
terminated (cancel, soft time limit: SIGTERM), killed (hard time limit: SIGKILL) and
capped in memory (RLIMIT_AS). The child reports progress and its outcome over a pipe."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import resource
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

from application.outcomes import JobCancelled, Outcome, classify
from consumers.context import JobContext
from consumers.registry import _params_model

SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class ChildJob:
    """What the child needs to find and run the handler (picklable)."""

    module: str
    qualname: str
    params: dict[str, Any]
    job_id: UUID
    job_type: str
    attempt: int
    tenant: str
    case_id: str
    correlation_id: str
    memory_limit_mb: int | None
    retry_on: tuple[type[BaseException], ...]


def child_main(job: ChildJob, conn: Connection) -> None:
    """Entry point of the child process."""
    if job.memory_limit_mb:
        limit = job.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def on_sigterm(signum: int, frame: object) -> None:
        raise JobCancelled

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when children stop
    try:
        handler: Any = importlib.import_module(job.module)
        for part in job.qualname.split("."):
            handler = getattr(handler, part)
        params = _params_model(handler).model_validate(job.params)
        ctx = JobContext(
            job_id=job.job_id,
            job_type=job.job_type,
            attempt=job.attempt,
            tenant=job.tenant,
            case_id=job.case_id,
            correlation_id=job.correlation_id,
            logger=logging.getLogger(f"jobledger.worker.{job.job_type}"),
            report=lambda percent, message: conn.send(("progress", percent, message)),
        )
        conn.send(("result", handler(ctx, params)))
    except JobCancelled:
        conn.send(("cancelled",))
    except MemoryError:
        exceeded = f"memory limit of {job.memory_limit_mb} MB exceeded"
        conn.send(("outcome", Outcome(error=exceeded, retryable=True)))
    except BaseException as exc:  # noqa: BLE001 - everything the handler raises is reported
        conn.send(("outcome", classify(exc, job.retry_on)))
    finally:
        conn.close()


class ChildProcess:
    """The parent's handle on one child: start it, read its messages, stop it."""

    def __init__(self, job: ChildJob) -> None:
        self.receive, send = SPAWN.Pipe(duplex=False)
        self.process = SPAWN.Process(target=child_main, args=(job, send), daemon=True)
        self.process.start()
        send.close()
        self.messages: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.receive.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            self.messages.put_nowait(self.receive.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.receive.fileno())
            self.messages.put_nowait(("exited",))

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            self.process.terminate()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            self.process.kill()

    async def close(self) -> int | None:
        await asyncio.to_thread(self.process.join, 5)
        if self.process.is_alive():
            self.kill()
            await asyncio.to_thread(self.process.join)
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.receive.fileno())
        self.receive.close()
        return self.process.exitcode


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"the job's process was killed by {signal.Signals(-code).name}"
    return f"the job's process exited with code {code} (pid {os.getpid()} is its worker)"
