"""No-op process-run job types for ``bench/process_jobs.py`` (``--app bench.process_app``),
and a no-op on the loop to compare with. Each process handler's first act is to say how
large its process is and which of the worker's own libraries it has imported."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import BaseModel

from consumers import JobContext, JobRegistry

registry = JobRegistry()

# Libraries the worker needs and a job's process should not pay for.
FRAMEWORK = ("aio_pika", "aiormq", "fastapi", "opentelemetry", "eventsourcing", "psycopg")


class NoopParams(BaseModel):
    n: int = 0


def process_facts() -> dict[str, object]:
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines)
    return {
        "pid": os.getpid(),
        "address_space_kb": int(status["VmSize"].split()[0]),
        "rss_kb": int(status["VmRSS"].split()[0]),
        "framework": [name for name in FRAMEWORK if name in sys.modules],
    }


@registry.job("noop_process", run_in="process")
def noop_process(ctx: JobContext, params: NoopParams) -> dict[str, object]:
    return process_facts()


@registry.job("noop_loop")
async def noop_loop(ctx: JobContext, params: NoopParams) -> None:
    return None
