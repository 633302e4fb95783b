"""What the use cases need from the world, as protocols: the ledger, the job types
the application registered, where workers say they are alive, and the limits a
pool shares. infra/ provides PostgreSQL and RabbitMQ behind them; the unit tests
provide fakes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from domain.job import Job
from domain.ledger import Committed
from domain.origin import Origin
from domain.retry import RetryPolicy


class Ledger(Protocol):
    """The commands and reads of domain.ledger.JobLedger that an attempt uses, each
    awaited on the worker's event loop."""

    async def get_job_async(self, job_id: UUID) -> Job: ...

    async def read_job_async(self, job_id: UUID) -> Job: ...

    async def start_job_async(
        self,
        job_id: UUID,
        attempt: int,
        worker_id: str,
        origin: Origin,
        delivery_id: str = "",
        *,
        loaded: Job | None = None,
    ) -> Committed: ...

    async def report_progress_async(
        self,
        job_id: UUID,
        percent: int,
        message: str,
        origin: Origin,
        *,
        attempt: int | None = None,
    ) -> Committed: ...

    async def complete_job_async(
        self, job_id: UUID, result: dict[str, Any], origin: Origin, *, attempt: int | None = None
    ) -> Committed: ...

    async def fail_attempt_async(
        self,
        job_id: UUID,
        error: str,
        *,
        retryable: bool,
        retry_delay_s: float | None,
        origin: Origin,
        attempt: int | None = None,
        traceback: str = "",
    ) -> Committed: ...

    async def interrupt_attempt_async(
        self, job_id: UUID, reason: str, *, attempt: int, origin: Origin
    ) -> Committed: ...

    async def confirm_cancelled_async(
        self, job_id: UUID, origin: Origin, *, attempt: int | None = None
    ) -> Committed: ...

    async def retry_job_async(self, job_id: UUID, origin: Origin) -> Committed: ...


class JobLimits(Protocol):
    @property
    def per_second(self) -> float | None: ...

    @property
    def max_running(self) -> int | None: ...


class JobKind(Protocol):
    """A registered job type, as an attempt needs it."""

    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> JobLimits: ...

    @property
    def retry(self) -> RetryPolicy | None: ...

    def validate(self, params: dict[str, Any]) -> Any:
        """The params as the handler takes them; raises domain.errors.InvalidParams."""
        ...


class JobKinds(Protocol):
    def get(self, name: str) -> JobKind:
        """Raises domain.errors.UnknownJobType."""
        ...


class Liveness(Protocol):
    """Where workers say they are alive and which jobs they hold."""

    def beat(self, worker_id: str, pool: str, in_flight: list[str], listed_at: datetime) -> None:
        """Record that the worker lives and holds ``in_flight``, a list made at
        ``listed_at`` (the worker's clock, the one its events are stamped with)."""
        ...

    def forget(self, worker_id: str) -> None: ...

    def holds(self, worker_id: str, job_id: UUID, started_at: datetime) -> bool:
        """Is the worker alive and still holding the attempt it started at
        ``started_at``? A list made before that start cannot name the job yet: the
        worker then holds it."""
        ...


class Limiter(Protocol):
    """Rate and concurrency limits shared by every worker of a pool."""

    def acquire(self, job_type: str, job_id: UUID, worker_id: str, limits: Any) -> float:
        """0 when the job may start now (a lease is taken if the type has
        ``max_running``), else the seconds to wait."""
        ...

    def release(self, job_id: UUID, worker_id: str) -> None:
        """Give up the lease ``worker_id`` took for the job (none: nothing happens)."""
        ...
