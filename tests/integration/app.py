"""Job types for the integration tests (``--app tests.integration.app``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, Field

from consumers import JobContext, JobRegistry, Limits, PermanentError, Retry
from domain.retry import RetryPolicy

registry = JobRegistry()

# The process that imported this module: for a process-run job, the zygote that forks it.
IMPORTED_IN = os.getpid()


class EchoParams(BaseModel):
    text: str = Field(max_length=200)


@registry.job("echo")
async def echo(ctx: JobContext, params: EchoParams) -> dict[str, object]:
    ctx.progress(50, "echoing")
    return {"echo": params.text, "attempt": ctx.attempt}


class NapParams(BaseModel):
    seconds: float = Field(ge=0, le=30)


@registry.job("nap")
async def nap(ctx: JobContext, params: NapParams) -> dict[str, object]:
    steps = 10
    for step in range(1, steps + 1):
        await asyncio.sleep(params.seconds / steps)
        ctx.progress(100 * step / steps, f"nap {step}/{steps}")
    return {"slept": params.seconds}


class FailParams(BaseModel):
    message: str = "broken on purpose"
    permanent: bool = True


@registry.job("fail")
def fail(ctx: JobContext, params: FailParams) -> None:
    if params.permanent:
        raise PermanentError(params.message)
    raise RuntimeError(params.message)


class SpinParams(BaseModel):
    seconds: float = Field(ge=0, le=30)


@registry.job("spin")
def spin(ctx: JobContext, params: SpinParams) -> dict[str, object]:
    """A thread handler that reports progress until done or cancelled."""
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        ctx.progress(50, "spinning")
        time.sleep(0.05)
    return {"spun": params.seconds}


FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=1.0, factor=1.0, max_delay_s=1.0)


class FlakyParams(BaseModel):
    fail_attempts: int = Field(ge=0, le=10)


@registry.job("flaky", retry=FAST_RETRY)
async def flaky(ctx: JobContext, params: FlakyParams) -> dict[str, object]:
    """Fails its first ``fail_attempts`` attempts with a retryable error."""
    if ctx.attempt <= params.fail_attempts:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@registry.job("flaky_twice", retry=replace(FAST_RETRY, max_attempts=2))
async def flaky_twice(ctx: JobContext, params: FlakyParams) -> dict[str, object]:
    """Like flaky, with two attempts: fail_attempts=2 exhausts them."""
    if ctx.attempt <= params.fail_attempts:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


class DelayParams(BaseModel):
    delay_s: float = Field(ge=0, le=60)


@registry.job("ask_retry", retry=FAST_RETRY)
async def ask_retry(ctx: JobContext, params: DelayParams) -> dict[str, object]:
    if ctx.attempt == 1:
        raise Retry("not ready yet", delay_s=params.delay_s)
    return {"attempt": ctx.attempt}


class NoParams(BaseModel):
    pass


@registry.job("crash", retry=replace(FAST_RETRY, max_attempts=2))
def crash(ctx: JobContext, params: NoParams) -> None:
    """Kills the worker process that runs it."""
    os.kill(os.getpid(), signal.SIGKILL)


class BurnParams(BaseModel):
    seconds: float = Field(ge=0, le=60)


@registry.job("burn", run_in="process")
def burn(ctx: JobContext, params: BurnParams) -> dict[str, object]:
    """CPU in a child process; never looks at ctx.cancelled."""
    deadline = time.monotonic() + params.seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return {"loops": n}


@registry.job("stubborn", run_in="process", limits=Limits(hard_time_limit_s=2))
def stubborn(ctx: JobContext, params: BurnParams) -> dict[str, object]:
    """Ignores SIGTERM, so only the hard time limit stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(params.seconds)
    return {"slept": params.seconds}


@registry.job("dawdle", limits=Limits(time_limit_s=1), retry=replace(FAST_RETRY, max_attempts=1))
async def dawdle(ctx: JobContext, params: BurnParams) -> dict[str, object]:
    await asyncio.sleep(params.seconds)
    return {"slept": params.seconds}


class HogParams(BaseModel):
    megabytes: int = Field(ge=1, le=4096)


@registry.job(
    "hog",
    run_in="process",
    limits=Limits(memory_limit_mb=300),
    retry=replace(FAST_RETRY, max_attempts=1),
)
def hog(ctx: JobContext, params: HogParams) -> dict[str, object]:
    block = bytearray(params.megabytes * 1024 * 1024)
    return {"allocated": len(block)}


@registry.job("whoami", run_in="process")
def whoami(ctx: JobContext, params: NoParams) -> dict[str, object]:
    """Which process runs it, which imported its module, and which of the worker's
    libraries it has."""
    worker_libraries = (
        "aio_pika",
        "aiormq",
        "fastapi",
        "opentelemetry",
        "eventsourcing",
        "psycopg",
    )
    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "imported_in": IMPORTED_IN,
        "worker_libraries": [name for name in worker_libraries if name in sys.modules],
    }


class LingerParams(BaseModel):
    pid_dir: str
    seconds: float = Field(ge=0, le=120)


@registry.job("linger", run_in="process", retry=replace(FAST_RETRY, max_attempts=2))
def linger(ctx: JobContext, params: LingerParams) -> dict[str, object]:
    """Writes its pid to ``<pid_dir>/<attempt>``, then sleeps."""
    (Path(params.pid_dir) / str(ctx.attempt)).write_text(str(os.getpid()))
    time.sleep(params.seconds)
    return {"slept": params.seconds}


@registry.job("metered", limits=Limits(per_second=2))
async def metered(ctx: JobContext, params: NoParams) -> dict[str, object]:
    return {"at": time.time()}


@registry.job("exclusive", limits=Limits(max_running=1))
async def exclusive(ctx: JobContext, params: NapParams) -> dict[str, object]:
    started = time.time()
    await asyncio.sleep(params.seconds)
    return {"started": started, "ended": time.time()}


class ChatterParams(BaseModel):
    reports: int = Field(ge=1, le=10_000)
    message_bytes: int = Field(default=10, ge=1, le=65536)


@registry.job("chatter")
async def chatter(ctx: JobContext, params: ChatterParams) -> dict[str, object]:
    """Reports progress as fast as it can, with messages of the given size."""
    padding = "x" * params.message_bytes
    for report in range(params.reports):
        ctx.progress(100 * report // params.reports, f"{report} {padding}")
        await asyncio.sleep(0.001)
    return {"reports": params.reports}


class SlowFailParams(BaseModel):
    seconds: float = Field(ge=0, le=30)


@registry.job("slow_fail")
async def slow_fail(ctx: JobContext, params: SlowFailParams) -> None:
    """Fails for good after ``seconds``: time to cut a connection or restart a server."""
    await asyncio.sleep(params.seconds)
    raise PermanentError("failed on purpose, slowly")


class DirtyParams(BaseModel):
    fail: bool = False


@registry.job("dirty", retry=replace(FAST_RETRY, max_attempts=1))
async def dirty(ctx: JobContext, params: DirtyParams) -> dict[str, object]:
    """Says things no PostgreSQL text column takes: NUL and a lone surrogate."""
    ctx.progress(50, "half\x00way \ud800")
    await asyncio.sleep(0.2)  # the progress is written before the outcome
    if params.fail:
        raise RuntimeError("broke at byte \x00 of \udfff")
    return {"text": "a\x00b", "nested": {"k\x00": ["\ud83d", 1.5]}}


@registry.job("side_echo", pool="side")
async def side_echo(ctx: JobContext, params: EchoParams) -> dict[str, object]:
    """A job type of another pool: `jobledger run` must serve it too."""
    return {"echo": params.text, "pool": "side"}
