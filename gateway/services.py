"""What the gateway is given: the ledger, the view, the job types and how to
identify a caller. Built by infra/bootstrap.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from application.schedules import Schedules
from application.submissions import Submissions
from domain.ledger import JobLedger
from gateway.caller import Identify
from gateway.sse import Streams
from projections.figures import PoolFigures
from projections.projection import JobView


class JobTypeInfo(Protocol):
    @property
    def pool(self) -> str: ...

    @property
    def max_attempts(self) -> int | None: ...

    @property
    def submission_model(self) -> type[BaseModel]:
        """The params a client may submit (unknown fields refused)."""
        ...


class JobTypes(Protocol):
    """The registered job types, as the gateway needs them."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> JobTypeInfo: ...

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DeadLetter:
    """A message in the DLQ, as its headers describe it."""

    message_id: str | None
    job_id: str | None
    job_type: str | None
    attempt: int | None
    tenant: str | None
    correlation_id: str | None
    reason: str


class DeadLettersUnavailable(Exception):
    """The DLQ cannot be read right now."""


class AuditLog(Protocol):
    """A tenant's events, in ledger order, for auditors."""

    def head(self) -> int:
        """The ledger's last position."""
        ...

    def page(
        self,
        tenant: str,
        *,
        after: int,
        until: int,
        case_id: str | None,
        job_type: str | None,
        scan: int,
    ) -> tuple[list[tuple[Any, int]], int]:
        """The next ``scan`` events of the ledger in (after, until], and of those the
        tenant's (of ``case_id`` and ``job_type`` where given) as (event, position),
        oldest first; with the last position scanned."""
        ...


class DeadLetters(Protocol):
    """Reads the DLQ without taking messages out of it."""

    def peek(self, limit: int) -> list[DeadLetter]: ...


@dataclass(frozen=True)
class QueueDepth:
    """A pool's work queue as the broker counts it."""

    ready: int
    in_flight: int  # delivered, not yet acknowledged
    consumers: int


class QueuesUnavailable(Exception):
    """The broker's queue figures cannot be read right now."""


class Queues(Protocol):
    """The work queues' depths, from the broker."""

    def depths(self, pools: list[str]) -> dict[str, QueueDepth]:
        """Each pool's queue (a pool whose queue does not exist yet is absent)."""
        ...


class RecentFigures(Protocol):
    """A tenant's figures of the last hour per pool, from the job view."""

    def __call__(
        self, tenant: str, since: datetime, pools: Mapping[str, str]
    ) -> dict[str, PoolFigures]: ...


@dataclass(frozen=True)
class Services:
    ledger: JobLedger
    view: JobView
    job_types: JobTypes
    submissions: Submissions
    identify: Identify
    read_your_writes_timeout_s: float = 2.0
    dead_letters: DeadLetters | None = None
    max_body_bytes: int = 65536
    max_batch_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 8192
    body_timeout_s: float = 30.0
    streams: Streams | None = None
    audit: AuditLog | None = None
    queues: Queues | None = None
    recent_figures: RecentFigures | None = None
    schedules: Schedules | None = None
