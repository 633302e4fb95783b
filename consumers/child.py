"""What runs in a process-run job's own process: find the handler, run it under its
memory cap, and report progress and the outcome to the worker over a connection.

The process is forked by the zygote (consumers/zygote.py), which imported the job
modules beforehand; this module imports only the standard library and what a handler
needs anyway (its context, its params model), never the broker, the ledger or
telemetry (an import-linter contract keeps it so)."""

from __future__ import annotations

import importlib
import logging
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

MB = 1024 * 1024


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


def address_space() -> int:
    """This process's address space (virtual memory), in bytes: what RLIMIT_AS caps."""
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def run(job: ChildJob, conn: Connection) -> None:
    """Run the job's handler in this process and report to the worker: ``("started",
    pid, address space)`` just before the handler is called, then ``("progress", …)``
    any number of times and one ``("result", …)``, ``("cancelled",)`` or ``("outcome",
    …)``. The memory cap counts from the handler's start: the address space the process
    has then, plus ``memory_limit_mb``."""

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
        at_start = address_space()
        conn.send(("started", os.getpid(), at_start))
        if job.memory_limit_mb:
            limit = at_start + job.memory_limit_mb * MB
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
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
