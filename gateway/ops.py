"""What operations endpoints are given: readiness probes, the metrics text and the
live workers. Built by infra/bootstrap.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class LiveWorker:
    worker_id: str
    pool: str
    started_at: datetime
    heartbeat_at: datetime
    in_flight: list[str]


Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Ops:
    # name → a probe that raises (any exception) when that dependency is not ready
    probes: Mapping[str, Probe] = field(default_factory=dict)
    metrics: Callable[[], tuple[bytes, str]] | None = None
    workers: Callable[[], list[LiveWorker]] | None = None
